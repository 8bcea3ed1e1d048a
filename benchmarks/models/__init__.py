"""Models of the benchmarks: backbone (input -> embedding) + an :class:`lfs.CosineClassifier` head.

Every model is an :class:`EmbeddingClassifier` (``forward -> (cos, scale)``, ``embed``,
``logits``), built by name through a timm-style registry::

    from benchmarks.models import build_model, available_models
    model = build_model("resnet20", num_classes=10)                  # CIFAR, bias-free linear head
    model = build_model("sphere_reid_resnet50", 751, input_size=(256, 128))   # normalized, s=14

Registered: ``resnet20`` (CIFAR ResNet-20, AM-LFS Table 2), ``sphereface20`` (SphereFace's
20-layer face CNN), ``sphere_reid_resnet50`` (SphereReID), and the mini-tier ``cnn1d`` (mnist1d)
and ``mlp`` (flat inputs). Each builder's ``normalize`` / ``s`` defaults are its paper's head.
"""
from .base import EmbeddingClassifier, count_parameters
from .registry import available_models, build_model, get_model_builder, register_model

# importing the model modules registers them
from .mini import CNN1d, MLP, cnn1d, mlp
from .resnet_cifar import BasicBlock, ResNetCifar, ShortcutA, resnet20
from .sphere_reid import SphereReIDBackbone, sphere_reid_resnet50
from .sphereface import Sphere20a, SphereResidualUnit, sphereface20

__all__ = [
    "EmbeddingClassifier", "count_parameters", "available_models", "build_model", "get_model_builder",
    "register_model", "CNN1d", "MLP", "cnn1d", "mlp", "BasicBlock", "ResNetCifar", "ShortcutA", "resnet20",
    "SphereReIDBackbone", "sphere_reid_resnet50", "Sphere20a", "SphereResidualUnit", "sphereface20",
]
