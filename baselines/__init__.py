"""Hand-crafted losses AM-LFS is compared against, one file each, built on :mod:`lfs`.

Every loss has a functional form ``name(cos, target, scale=..., <hyper-parameters>,
reduction="mean")`` acting on the N x C cosine matrix (logits ``scale * cos``) and a module form,
a :class:`lfs.heads.HeadLoss` that owns its class weights (``forward(embeddings, labels)``).
The margin losses replace only the target logit and share :func:`lfs.loss.target_logit_cross_entropy`
with AM-LFS. All functional forms run under ``torch.func.vmap``.

- ``cross_entropy``: :func:`cross_entropy`, :class:`CrossEntropyLoss` (head ``"none"``)
- ``l_softmax``: :func:`l_softmax`, :class:`LSoftmaxLoss` (head ``"none"``)
- ``sphereface``: :func:`sphereface`, :class:`SphereFaceLoss` (head ``"weights"``)
- ``cosface``: :func:`cosface`, :class:`CosFaceLoss` (head ``"both"``)
- ``arcface``: :func:`arcface`, :class:`ArcFaceLoss` (head ``"both"``)
- ``focal``: :func:`focal`, :class:`FocalLoss` (head ``"none"``)
- ``poly1``: :func:`poly1`, :class:`Poly1Loss` (head ``"none"``)
- ``cse_autoloss_a``: :func:`cse_autoloss_a`, :class:`CSEAutolossALoss` (head ``"none"``), a found loss
- ``l2t_dlf``: :func:`~baselines.l2t_dlf.l2t_dlf` and its teacher (:class:`~baselines.l2t_dlf.L2TDLF`)

Look losses up by name with :func:`get` / :func:`available` (and build the module form with
:func:`create`).
"""
from .registry import BaselineLoss, available, create, get, register
from .cross_entropy import CrossEntropyLoss, cross_entropy
from .l_softmax import LSoftmaxLoss, chebyshev_cos_multiple, l_softmax, psi
from .sphereface import SphereFaceLoss, sphereface, sphereface_lambda
from .cosface import CosFaceLoss, cosface
from .arcface import ArcFaceLoss, arcface
from .focal import FocalLoss, focal
from .poly import Poly1Loss, poly1
from .cse_autoloss import CSEAutolossALoss, cse_autoloss_a
from . import l2t_dlf  # noqa: F401  (registers "l2t_dlf")

__all__ = [
    "BaselineLoss", "available", "create", "get", "register",
    "cross_entropy", "CrossEntropyLoss",
    "l_softmax", "LSoftmaxLoss", "psi", "chebyshev_cos_multiple",
    "sphereface", "SphereFaceLoss", "sphereface_lambda",
    "cosface", "CosFaceLoss",
    "arcface", "ArcFaceLoss",
    "focal", "FocalLoss",
    "poly1", "Poly1Loss",
    "l2t_dlf",
]
