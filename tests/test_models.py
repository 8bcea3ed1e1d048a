"""benchmarks.models: shapes, heads, reference architectures, registry, vmap over stacked copies."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from benchmarks.models import (
    EmbeddingClassifier,
    ShortcutA,
    available_models,
    build_model,
    count_parameters,
    register_model,
)
from benchmarks.models.registry import _MODELS
from lfs import CosineClassifier

# name -> (build kwargs, per-sample input shape used in the tests, embedding dim, default head)
SPECS = {
    "resnet20": ({}, (3, 32, 32), 64, ("none", None)),
    "sphereface20": ({}, (3, 112, 96), 512, ("both", 30.0)),
    "sphere_reid_resnet50": ({}, (3, 64, 32), 1024, ("both", 14.0)),  # reduced input; GAP takes any size
    "cnn1d": ({}, (1, 40), 64, ("none", None)),
    "mlp": ({"in_features": 64}, (64,), 64, ("none", None)),
}
NUM_CLASSES = 7


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny batches gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads made a ResNet-20 forward 100x slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models(_one_thread):
    torch.manual_seed(0)
    return {name: build_model(name, NUM_CLASSES, **kw) for name, (kw, *_rest) in SPECS.items()}


def test_registry_lists_all_models():
    assert available_models() == sorted(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_embed_logits_shapes(models, name):
    _, shape, dim, (normalize, s) = SPECS[name]
    model = models[name]
    assert isinstance(model, EmbeddingClassifier) and isinstance(model.head, CosineClassifier)
    assert model.embedding_dim == dim and model.num_classes == NUM_CLASSES
    assert model.normalize == normalize and (s is None or model.s == s)
    torch.manual_seed(1)
    x = torch.randn(2, *shape)
    model.eval()
    with torch.no_grad():
        out = model(x)
        emb, logits = model.embed(x), model.logits(x)
    assert isinstance(out, tuple) and len(out) == 2
    cos, scale = out
    assert cos.shape == (2, NUM_CLASSES) and logits.shape == (2, NUM_CLASSES)
    assert emb.shape == (2, dim)
    assert torch.isfinite(cos).all() and torch.isfinite(emb).all()
    assert (cos.abs() <= 1 + 1e-5).all()
    torch.testing.assert_close(logits, cos * scale)
    # forward is the head applied to the embedding; forward(embed=True) is the embedding
    torch.testing.assert_close(cos, model.head(emb)[0])
    with torch.no_grad():
        torch.testing.assert_close(model(x, embed=True), emb)


def test_train_mode_backward_reaches_all_parameters(models):
    model = models["resnet20"]
    model.train()
    cos, scale = model(torch.randn(4, 3, 32, 32))
    (cos * scale).logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)


# --- ResNet-20 -------------------------------------------------------------------------------

def test_resnet20_parameter_count():
    model = build_model("resnet20", 10)
    n = count_parameters(model)
    assert 260_000 <= n <= 280_000
    # exact: He et al.'s 0.27M network (269,722 with a biased FC) minus the 10 FC biases
    assert n == 269_712
    assert count_parameters(model.head) == 640


def test_resnet20_structure_and_option_a_shortcut():
    bb = build_model("resnet20", 10).backbone
    convs = [m for m in bb.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # + the FC head = 20 weight layers
    assert all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    for layer, c, n in ((bb.layer1, 16, 3), (bb.layer2, 32, 3), (bb.layer3, 64, 3)):
        assert len(layer) == n and layer[-1].conv2.out_channels == c
    shortcuts = [m for m in bb.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2
    assert all(sum(p.numel() for p in s.parameters()) == 0 and not list(s.buffers()) for s in shortcuts)
    # option A: subsample every other pixel, zero-pad the new channels (8 in front, 8 behind)
    x = torch.randn(2, 16, 32, 32)
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (2, 32, 16, 16)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()


def test_resnet20_unnormalized_head_is_plain_linear(models):
    model = models["resnet20"]
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        emb = model.embed(x)
        torch.testing.assert_close(model.logits(x), emb @ model.head.weight.T)
        _, scale = model(x)
        torch.testing.assert_close(scale, emb.norm(dim=1, keepdim=True) * model.head.weight.norm(dim=1))


# --- SphereFace-20 / SphereReID -------------------------------------------------------------

def test_sphereface20_architecture(models):
    bb = models["sphereface20"].backbone
    convs = [m for m in bb.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    assert [len(st.units) for st in bb.stages] == [1, 2, 4, 1]
    assert [st.conv.out_channels for st in bb.stages] == [64, 128, 256, 512]
    assert bb.feature_shape == (512, 7, 6) and bb.fc5.in_features == 512 * 7 * 6
    assert sum(isinstance(m, nn.PReLU) for m in bb.modules()) == 20
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in bb.modules())
    # configurable input size and head
    small = build_model("sphereface20", 5, input_size=(32, 32), normalize="weights")
    assert small.backbone.fc5.in_features == 512 * 2 * 2 and small.normalize == "weights"
    x = torch.randn(2, 3, 32, 32)
    cos, scale = small(x)
    assert cos.shape == (2, 5) and scale.shape == (2, 1)
    torch.testing.assert_close(scale, small.embed(x).norm(dim=1, keepdim=True))  # A-softmax: scale = ||x||


def test_sphere_reid_neck_and_pretrained_path(models, tmp_path):
    model = models["sphere_reid_resnet50"]
    neck = model.backbone.neck
    assert [type(m) for m in neck] == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.BatchNorm1d]
    assert neck[0].num_features == 2048 and neck[1].p == 0.5 and neck[2].out_features == 1024
    assert model.input_shape == (3, 256, 128)
    assert model.s == 14.0
    # train mode: dropout active, batch of 2 is enough for the BatchNorms
    model.train()
    cos, scale = model(torch.randn(2, 3, 64, 32))
    assert cos.shape == (2, NUM_CLASSES) and float(scale) == 14.0
    # a local state dict with torchvision's key names (and the fc the model drops) is loaded
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    ref = {}
    for k, v in model.backbone.trunk.state_dict().items():
        i, rest = k.split(".", 1)
        ref[f"{names[int(i)]}.{rest}"] = v + 1 if v.is_floating_point() else v
    ref["fc.weight"], ref["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path / "r50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.items()}}, path)
    loaded = build_model("sphere_reid_resnet50", 3, pretrained_path=path)
    for k, v in loaded.backbone.trunk.state_dict().items():
        i, rest = k.split(".", 1)
        assert torch.equal(v, ref[f"{names[int(i)]}.{rest}"]), k
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision ResNet-50"):
        build_model("sphere_reid_resnet50", 3, pretrained_path=bad)


def test_sphere_reid_options():
    model = build_model("sphere_reid_resnet50", 4, neck="A", last_stride=1, input_size=(288, 144), s=20.0)
    assert model.embedding_dim == 2048 and isinstance(model.backbone.neck, nn.Identity)
    assert model.input_shape == (3, 288, 144) and model.s == 20.0
    with torch.no_grad():
        fmap = model.backbone.trunk.eval()(torch.randn(1, 3, 64, 32))
    assert fmap.shape == (1, 2048, 4, 2)  # overall stride 16 instead of 32
    with pytest.raises(ValueError, match="neck"):
        build_model("sphere_reid_resnet50", 4, neck="E")


# --- heads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", ["both", "weights", "none"])
def test_head_normalize_options(normalize):
    torch.manual_seed(0)
    model = build_model("mlp", 5, in_features=12, normalize=normalize, s=7.5)
    assert model.head.normalize == normalize
    x = torch.randn(6, 12)
    cos, scale = model(x)
    emb = model.embed(x)
    w = model.head.weight
    assert (cos.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(cos, nn.functional.normalize(emb, dim=1) @ nn.functional.normalize(w, dim=1).T)
    if normalize == "both":
        assert scale.numel() == 1 and float(scale) == 7.5
    elif normalize == "weights":
        torch.testing.assert_close(scale, emb.norm(dim=1, keepdim=True))
    else:
        torch.testing.assert_close(model.logits(x), emb @ w.T)


def test_bad_normalize_rejected():
    with pytest.raises(ValueError, match="normalize"):
        build_model("mlp", 3, normalize="cosine")


# --- registry --------------------------------------------------------------------------------

def test_unknown_model_error_lists_names():
    with pytest.raises(ValueError) as info:
        build_model("resnet2000", 10)
    msg = str(info.value)
    assert "\n" not in msg and "resnet2000" in msg
    assert all(name in msg for name in available_models())


def test_register_model_and_duplicates():
    @register_model("_test_tiny")
    def _tiny(num_classes, normalize="both", s=3.0, width=4):
        return EmbeddingClassifier(nn.Linear(2, width), width, num_classes, normalize, s)

    try:
        assert "_test_tiny" in available_models()
        m = build_model("_test_tiny", 4, width=6)
        assert m.embedding_dim == 6 and m.num_classes == 4 and m.s == 3.0
        with pytest.raises(ValueError, match="already registered"):
            register_model("_test_tiny")(lambda num_classes, **kw: None)
        with pytest.raises(TypeError):
            build_model("_test_tiny", 4, no_such_option=1)
    finally:
        _MODELS.pop("_test_tiny", None)
    assert "_test_tiny" not in available_models()


# --- determinism ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "sphereface20", "cnn1d", "mlp"])
def test_construction_is_deterministic_under_seed(name):
    kw = dict(SPECS[name][0])
    if name == "sphereface20":
        kw["input_size"] = (32, 32)  # a smaller fc5, same layers

    def state(seed):
        torch.manual_seed(seed)
        return build_model(name, NUM_CLASSES, **kw).state_dict()

    a, b, c = state(0), state(0), state(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# --- vmap over stacked copies -----------------------------------------------------------------

@pytest.mark.parametrize("name,kw,shape", [
    ("cnn1d", {"bn": True}, (1, 40)),
    ("mlp", {"bn": True, "in_features": 20, "hidden": (32, 16)}, (20,)),
    ("cnn1d", {"bn": False}, (40,)),
    ("cnn1d", {"bn": True, "conv": "matmul"}, (1, 40)),
    ("cnn1d", {"bn": False, "conv": "matmul"}, (40,)),
    ("mlp", {"bn": True, "in_features": 20, "normalize": "both", "s": 10.0}, (20,)),
])
def test_vmap_over_stacked_copies_matches_one_by_one(name, kw, shape):
    B, n = 3, 8
    copies = []
    for i in range(B):
        torch.manual_seed(100 + i)  # different weights per copy
        m = build_model(name, 5, **kw).train()
        copies.append(m)
    if kw.get("bn"):
        assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in copies[0].modules())
    reference = [copy.deepcopy(m) for m in copies]
    torch.manual_seed(0)
    xs = torch.randn(B, n, *shape) * 2 + 0.5  # a different minibatch per copy

    params, _ = stack_module_state(copies)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in copies]).clone()
               for k, _ in copies[0].named_buffers()}
    template = copy.deepcopy(copies[0]).to("meta")

    def run(p, b, x):
        cos, scale = functional_call(template, (p, b), (x,))
        return cos, scale.expand_as(cos)

    cos_v, scale_v = vmap(run)(params, buffers, xs)
    (cos_v * scale_v).logsumexp(-1).sum().backward()

    for i, m in enumerate(reference):
        cos, scale = m(xs[i])
        torch.testing.assert_close(cos_v[i], cos, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scale_v[i], scale.expand_as(cos), rtol=1e-5, atol=1e-6)
        (cos * scale).logsumexp(-1).sum().backward()
        for k, p in m.named_parameters():
            torch.testing.assert_close(params[k].grad[i], p.grad, rtol=1e-4, atol=1e-6)
        for k, b in m.named_buffers():  # running stats updated per copy, exactly as one by one
            torch.testing.assert_close(buffers[k][i], b, rtol=1e-5, atol=1e-6)
    # the evaluation path: stacked copies in eval mode, one shared batch, embeddings via forward kwargs
    for m in reference:
        m.eval()
    x_eval = torch.randn(n, *shape)
    emb_v = vmap(lambda p, b, x: functional_call(template.eval(), (p, b), (x,), {"embed": True}),
                 in_dims=(0, 0, None))({k: v.detach() for k, v in params.items()}, buffers, x_eval)
    for i, m in enumerate(reference):
        torch.testing.assert_close(emb_v[i], m.embed(x_eval).detach(), rtol=1e-5, atol=1e-6)
    if kw.get("bn"):
        # the stacked buffers did move (the comparison above is not vacuous)
        moved = [k for k, b in copies[0].named_buffers() if k.endswith("running_mean")]
        assert moved and all(not torch.equal(buffers[k][0], dict(copies[0].named_buffers())[k]) for k in moved)
        assert all(int(buffers[k].flatten()[0]) == 1 for k in buffers if k.endswith("num_batches_tracked"))


# --- cnn1d: the matmul convolutions are the native ones -----------------------------------------

@pytest.mark.parametrize("bn", [False, True])
def test_cnn1d_matmul_convolutions_equal_native_outputs_and_gradients(bn):
    """conv="matmul" (channels-last unfolded patches @ W) is nn.Conv1d's function with the same
    parameters: same state_dict keys and init under one seed, same outputs, same gradients."""
    torch.manual_seed(3)
    native = build_model("cnn1d", 5, bn=bn, input_length=37, channels=6).train()
    torch.manual_seed(3)
    matmul = build_model("cnn1d", 5, bn=bn, input_length=37, channels=6, conv="matmul").train()
    a, b = native.state_dict(), matmul.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(9, 1, 37, dtype=torch.float64)
    native, matmul = native.double(), matmul.double()
    outs = []
    for m in (native, matmul):
        cos, scale = m(x)
        (cos * torch.arange(5.0, dtype=torch.float64)).sum().backward()
        outs.append((cos.detach(), {k: p.grad for k, p in m.named_parameters()}, dict(m.named_buffers())))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    for k in outs[0][1]:
        torch.testing.assert_close(outs[0][1][k], outs[1][1][k], rtol=1e-10, atol=1e-12)
    for k in outs[0][2]:  # BatchNorm running statistics
        torch.testing.assert_close(outs[0][2][k], outs[1][2][k])


def test_matmul_conv1d_patches_are_unfolds_bit_for_bit_under_vmap():
    """The strided-slice patches of matmul_conv1d are ``unfold``'s patches: for cnn1d's layers
    (k = 5 and 3, stride 2, padding 1), over 4 vmapped copies in float32, the output and every
    gradient (input, weight, bias) equal bit for bit those of the unfold form that made the
    committed mini rows before it (its backward was the slow one)."""
    from benchmarks.models.mini import matmul_conv1d
    from benchmarks.perf.cases import conv_with, unfold_conv1d  # the former implementation

    torch.manual_seed(0)
    for c, k, length, needs_input_grad in ((1, 5, 40, False), (25, 3, 20, True), (25, 3, 10, True)):
        conv = nn.Conv1d(c, 25, k, stride=2, padding=1)
        results = []
        for conv_fn in (matmul_conv1d, unfold_conv1d):
            weight = torch.stack([conv.weight.detach()] * 4).clone().requires_grad_()
            bias = torch.stack([conv.bias.detach()] * 4).clone().requires_grad_()
            h = torch.randn(4, 50, length, c, generator=torch.Generator().manual_seed(1)).requires_grad_(needs_input_grad)

            def f(w, b, x):
                return torch.relu(conv_fn(x, conv_with(conv, w, b)))

            out = vmap(f)(weight, bias, h)
            (out * torch.linspace(-1, 1, out.shape[-1])).square().sum().backward()
            results.append((out.detach(), weight.grad, bias.grad) + ((h.grad,) if needs_input_grad else ()))
        assert all(torch.equal(a, b) for a, b in zip(*results)), (c, k)


def test_cnn1d_rejects_an_unknown_conv():
    with pytest.raises(ValueError, match="conv must be one of"):
        build_model("cnn1d", 5, conv="fft")
