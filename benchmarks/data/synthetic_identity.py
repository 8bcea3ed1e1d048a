r"""A synthetic open-set identity set: the mini-tier analogue of re-ID and face recognition.

Protocol (ARCHITECTURE.md, "Tiers" -> mini: "a documented synthetic many-identity set for the face and
re-ID analogues"; "Evaluation protocols" -> Re-ID and MegaFace). It reproduces the STRUCTURE of
Market-1501 / DukeMTMC-reID (disjoint train/test identities, several cameras, one query per
identity and camera, same-camera gallery images that the evaluation discards, pid-0 distractors
in the gallery) and of MegaFace (many identities with few images each, probes matched against a
gallery swamped with distractors), at a size that trains on a CPU in seconds.

Generative model
----------------
A "world" is drawn once per seed (``L = latent_dim``, ``P = nuisance_dim``, ``H = hidden_dim``,
``D = dim``, ``C = num_cameras``)::

    W1 ~ N(0, gain^2 / (L + P))^{H x (L+P)},  b1 ~ N(0, 0.5^2)^H,  W2 ~ N(0, 1 / H)^{D x H}
    g(u, p) = W2 tanh(W1 [u; p] + b1)                   (fixed random 2-layer nonlinear map)
    for each camera c = 0..C-1:
        S_c = (G_c - G_c^T) / sqrt(2 D),  G_c ~ N(0, 1)^{D x D}
        A_c = (1 + s_c) expm(camera_mixing * S_c),  s_c ~ U(-scale_jitter, scale_jitter)
                                                    (a random rotation near I, and a scale)
        o_c ~ N(0, camera_nuisance^2 I_D)           (camera offset)

Identity ``k`` has a latent ``z_k ~ N(0, I_L)``. Each of its images, seen by camera ``c``, is::

    eps ~ N(0, within_id^2 I_L)                     (within-identity variation)
    p   ~ N(0, nuisance_std^2 I_P)                  (per-image nuisance: pose / illumination)
    n   ~ N(0, noise^2 I_D)                         (sensor noise)
    x   = A_c g(z_k + eps, p) + o_c + n

Identity lives on a nonlinear ``L``-dimensional manifold of R^D, entangled by ``g`` with a
per-image nuisance ``p``; each camera moves and rotates it. In raw input space an image is
closer to other people on the same camera than to itself on another camera, so nearest-neighbour
retrieval on ``x`` is poor (cross-camera matching is the point of the re-ID protocol), while an
embedding learned with identity labels on the training identities removes the cameras and the
nuisance and transfers to unseen identities, because ``g`` and the cameras are shared by all
identities.

Measured with the defaults (seeds 0-2, cosine similarity, Market-style mAP with the
same-(pid, camid) filter; CPU): raw-input nearest neighbour mAP 0.025-0.06 (random scores:
~0.006); an MLP ``D -> 256 -> 64`` trained 20 epochs with cross entropy over the training
identities (Adam, lr 1e-3, batch 64, ~1-3 s): mAP 0.56-0.62 (``market_like``) and 0.36-0.41
(``duke_like``), rank-1 0.42-0.48 for ``face_like`` (raw: 0.23-0.27). A linear baseline (camera
means removed, within-class whitening, fitted on the training identities) reaches mAP 0.65-0.73
(seeds 0-1), so most of the structure is learnable and the losses compared have room to differ.

Splits
------
* train: ``num_train_ids`` identities, each seen by a random subset of ``2..max_cameras_per_id``
  cameras (all cameras for the face protocol), ``images_per_id_per_camera`` images per camera;
  pids relabelled ``0..K-1`` (original pids in ``info["train_pids_original"]``).
* val / test (identities disjoint from train and from each other; original pids >= 1):
  - ``protocol="reid"``: for every identity and each of its cameras, ONE image is a query and the
    other ``images_per_id_per_camera - 1`` go to the gallery (so every query has same-camera
    gallery images, which the evaluation removes, and cross-camera ones, which it ranks).
  - ``protocol="face"``: each identity has ``images_per_id_per_camera`` images; the first is its
    gallery image, the rest are probes (queries). Camera ids are a *session* flag here: 0 for
    probes, 1 for gallery images, so the re-ID same-(pid, camid) filter removes nothing, as in
    MegaFace where a probe is never in the gallery. (The full MegaFace protocol rotates which
    probe image is the gallery one; an evaluator can do that from query+gallery by pid.)
* distractors: ``num_distractors`` gallery-only images with pid ``0``, each from its own fresh
  identity, on a random camera (session 1 for the face protocol). The validation gallery gets
  ``val_distractors`` of its own (default: the same fraction as the test gallery).

Everything is drawn from one ``torch.Generator`` seeded with ``seed``: same seed, same tensors.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .containers import RetrievalData

__all__ = ["make_identity_set", "market_like", "duke_like", "face_like", "PRESETS"]


def _draw_world(g: torch.Generator, num_cameras: int, dim: int, latent_dim: int, nuisance_dim: int,
                hidden_dim: int, gain: float, camera_mixing: float, camera_nuisance: float,
                scale_jitter: float) -> dict:
    W1 = torch.randn(hidden_dim, latent_dim + nuisance_dim, generator=g) * (
        gain / math.sqrt(latent_dim + nuisance_dim))
    b1 = torch.randn(hidden_dim, generator=g) * 0.5
    W2 = torch.randn(dim, hidden_dim, generator=g) / math.sqrt(hidden_dim)
    A, o = [], []
    for _ in range(num_cameras):
        G = torch.randn(dim, dim, generator=g)
        S = (G - G.T) / math.sqrt(2 * dim)
        s = (torch.rand((), generator=g) * 2 - 1) * scale_jitter
        A.append((1 + s) * torch.linalg.matrix_exp(camera_mixing * S))
        o.append(torch.randn(dim, generator=g) * camera_nuisance)
    return {"W1": W1, "b1": b1, "W2": W2, "A": torch.stack(A), "o": torch.stack(o)}


def _render(world: dict, z: Tensor, cams: Tensor, g: torch.Generator, within_id: float,
            nuisance_dim: int, nuisance_std: float, noise: float) -> Tensor:
    """x = A_c g([z + eps; p]) + o_c + n for latents ``z`` (n, L) and cameras ``cams`` (n,)."""
    if z.shape[0] == 0:
        return torch.zeros(0, world["W2"].shape[0])
    u = z + within_id * torch.randn(z.shape, generator=g)
    p = nuisance_std * torch.randn(z.shape[0], nuisance_dim, generator=g)
    feat = torch.tanh(torch.cat([u, p], 1) @ world["W1"].T + world["b1"]) @ world["W2"].T
    x = torch.einsum("nij,nj->ni", world["A"][cams], feat) + world["o"][cams]
    return x + noise * torch.randn(x.shape, generator=g)


def _camera_subsets(g: torch.Generator, n_ids: int, num_cameras: int, lo: int, hi: int) -> list[Tensor]:
    out = []
    for _ in range(n_ids):
        k = int(torch.randint(lo, hi + 1, (), generator=g))
        out.append(torch.sort(torch.randperm(num_cameras, generator=g)[:k]).values)
    return out


def _single_threaded(fn):
    """Run ``fn`` with one torch thread, restoring the caller's setting afterwards.

    The tensors here are tiny, and torch's intra-op thread pool costs more than it saves on them
    (measured: ~0.8 s instead of ~0.03 s per preset on a loaded 2-core machine).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapper


@_single_threaded
def make_identity_set(seed: int = 0, num_train_ids: int = 150, num_val_ids: int = 50,
                      num_test_ids: int = 150, num_distractors: int = 500, num_cameras: int = 6,
                      images_per_id_per_camera: int = 3, dim: int = 32, latent_dim: int = 12,
                      nuisance_dim: int = 4, nuisance_std: float = 0.8,
                      hidden_dim: int = 64, within_id: float = 0.2, camera_nuisance: float = 0.5,
                      camera_mixing: float = 0.3, scale_jitter: float = 0.1, noise: float = 0.1,
                      gain: float = 1.5, max_cameras_per_id: int | None = None,
                      val_distractors: int | None = None, protocol: str = "reid",
                      name: str = "synthetic-reid") -> RetrievalData:
    """Generate a synthetic open-set identity set (see the module docstring for the model).

    Args:
        seed: seed of the single private generator (world, identities, images).
        num_train_ids, num_val_ids, num_test_ids: identities per split (disjoint).
        num_distractors: pid-0 gallery-only images in the test gallery.
        num_cameras: cameras (affine nuisances); 1 for the face protocol.
        images_per_id_per_camera: images of an identity per camera it appears on (reid, >= 2),
            or images per identity (face, >= 2: 1 gallery + probes).
        dim: input dimension D. latent_dim: identity latent L. hidden_dim: width H of g.
        within_id: std of the within-identity latent variation.
        camera_nuisance: std of the camera offsets o_c. camera_mixing: size of the rotation
            generator of A_c. scale_jitter: A_c's scale is in ``1 +- scale_jitter``.
        noise: std of the additive input noise (not label noise).
        gain: pre-activation gain of g (how nonlinear g is).
        max_cameras_per_id: identities appear on 2..this many cameras (default: all).
        val_distractors: pid-0 images in the validation gallery (default: num_distractors scaled
            by num_val_ids / num_test_ids).
        protocol: ``"reid"`` or ``"face"`` (see the module docstring).
        name: dataset name stored in the container.
    """
    if protocol not in ("reid", "face"):
        raise ValueError(f"protocol must be 'reid' or 'face', got {protocol!r}")
    if images_per_id_per_camera < 2:
        raise ValueError("images_per_id_per_camera must be >= 2 (a query and a gallery image)")
    if protocol == "reid" and num_cameras < 2:
        raise ValueError("the reid protocol needs num_cameras >= 2 (cross-camera matches)")
    if min(num_train_ids, num_val_ids, num_test_ids) < 1 or num_distractors < 0:
        raise ValueError("need >= 1 identity per split and num_distractors >= 0")
    hi = num_cameras if max_cameras_per_id is None else min(int(max_cameras_per_id), num_cameras)
    lo = 2 if protocol == "reid" else num_cameras
    if protocol == "reid" and hi < 2:
        raise ValueError("max_cameras_per_id must be >= 2")
    if val_distractors is None:
        val_distractors = int(round(num_distractors * num_val_ids / num_test_ids))

    g = torch.Generator().manual_seed(int(seed))
    world = _draw_world(g, num_cameras, dim, latent_dim, nuisance_dim, hidden_dim, gain,
                        camera_mixing, camera_nuisance, scale_jitter)
    n_total = num_train_ids + num_val_ids + num_test_ids
    z = torch.randn(n_total, latent_dim, generator=g)
    pids_original = torch.arange(1, n_total + 1)  # 0 is reserved for distractors
    subsets = _camera_subsets(g, n_total, num_cameras, lo, hi)
    m = images_per_id_per_camera

    def images_of(ids: range) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x, pid, cam, j) for ids: j = image index within (id, camera) [reid] or id [face]."""
        pid_l, cam_l, j_l = [], [], []
        for i in ids:
            cams = subsets[i]
            pid_l.append(torch.full((len(cams) * m,), i, dtype=torch.int64))
            cam_l.append(cams.repeat_interleave(m))
            j_l.append(torch.arange(m).repeat(len(cams)) if protocol == "reid"
                       else torch.arange(len(cams) * m))
        idx, cam, j = torch.cat(pid_l), torch.cat(cam_l), torch.cat(j_l)
        x = _render(world, z[idx], cam, g, within_id, nuisance_dim, nuisance_std, noise)
        return x, idx, cam, j

    def distractors(n: int) -> tuple[Tensor, Tensor, Tensor]:
        zd = torch.randn(n, latent_dim, generator=g)
        cam = torch.randint(0, num_cameras, (n,), generator=g)
        x = _render(world, zd, cam, g, within_id, nuisance_dim, nuisance_std, noise)
        camid = cam if protocol == "reid" else torch.ones(n, dtype=torch.int64)
        return x, torch.zeros(n, dtype=torch.int64), camid

    def query_gallery(ids: range, n_distr: int):
        x, idx, cam, j = images_of(ids)
        pid = pids_original[idx]
        is_q = j != 0 if protocol == "face" else j == 0
        if protocol == "reid":
            qcam, gcam = cam[is_q], cam[~is_q]
        else:
            qcam = torch.zeros(int(is_q.sum()), dtype=torch.int64)
            gcam = torch.ones(int((~is_q).sum()), dtype=torch.int64)
        xd, pd, cd = distractors(n_distr)
        query = (x[is_q].contiguous(), pid[is_q], qcam)
        gallery = (torch.cat([x[~is_q], xd]), torch.cat([pid[~is_q], pd]), torch.cat([gcam, cd]))
        return query, gallery

    train_ids = range(0, num_train_ids)
    val_ids = range(num_train_ids, num_train_ids + num_val_ids)
    test_ids = range(num_train_ids + num_val_ids, n_total)
    xt, idx_t, cam_t, _ = images_of(train_ids)
    y_t = idx_t  # train identities are 0..num_train_ids-1 already: the relabelling
    val_query, val_gallery = query_gallery(val_ids, val_distractors)
    query, gallery = query_gallery(test_ids, num_distractors)

    params = dict(seed=seed, num_train_ids=num_train_ids, num_val_ids=num_val_ids,
                  num_test_ids=num_test_ids, num_distractors=num_distractors,
                  val_distractors=val_distractors, num_cameras=num_cameras,
                  images_per_id_per_camera=m, dim=dim, latent_dim=latent_dim,
                  nuisance_dim=nuisance_dim, nuisance_std=nuisance_std,
                  hidden_dim=hidden_dim, within_id=within_id, camera_nuisance=camera_nuisance,
                  camera_mixing=camera_mixing, scale_jitter=scale_jitter, noise=noise, gain=gain,
                  max_cameras_per_id=hi, protocol=protocol)
    info = {
        "source": "benchmarks.data.synthetic_identity.make_identity_set (generated offline)",
        "params": params,
        "train_pids_original": pids_original[:num_train_ids].clone(),
        "train_camid": cam_t,
        "camid_meaning": "camera index" if protocol == "reid" else "session: 0 probe, 1 gallery",
        "world": world,
    }
    return RetrievalData(name=name, train=(xt, y_t), num_classes=num_train_ids,
                         val_query=val_query, val_gallery=val_gallery, query=query,
                         gallery=gallery, info=info)


def market_like(seed: int = 0, **overrides) -> RetrievalData:
    """Market-1501 analogue: 6 cameras, identities on 2..6 of them, pid-0 distractors.

    Sizes (seed 0): 150 train ids (~1,800 images); 50 val ids (~220 queries, ~600 gallery incl.
    167 distractors); 150 test ids (~590 queries, ~1,680 gallery incl. 500 distractors); D=32.
    """
    kw = dict(num_train_ids=150, num_val_ids=50, num_test_ids=150, num_distractors=500,
              num_cameras=6, images_per_id_per_camera=3, name="synthetic_reid_market")
    kw.update(overrides)
    return make_identity_set(seed=seed, **kw)


def duke_like(seed: int = 0, **overrides) -> RetrievalData:
    """DukeMTMC-reID analogue: 8 cameras (identities on 2..5), more distractors (Duke has 408
    gallery-only identities).

    Sizes (seed 0): 150 train ids (~1,600 images); 50 val ids (~175 queries, ~750 gallery incl.
    400 distractors); 150 test ids (~530 queries, ~2,260 gallery incl. 1,200 distractors).
    """
    kw = dict(num_train_ids=150, num_val_ids=50, num_test_ids=150, num_distractors=1200,
              num_cameras=8, images_per_id_per_camera=3, max_cameras_per_id=5,
              name="synthetic_reid_duke")
    kw.update(overrides)
    return make_identity_set(seed=seed, **kw)


def face_like(seed: int = 0, **overrides) -> RetrievalData:
    """MegaFace analogue: many identities with few images each, one camera, many distractors;
    evaluated by rank-1 identification of probes against gallery + distractors.

    Sizes: 1,000 train ids x 5 images; 100 val ids (400 probes; gallery 100 + 5,000
    distractors); 200 test ids (800 probes; gallery 200 + 10,000 distractors); D=32.
    """
    kw = dict(num_train_ids=1000, num_val_ids=100, num_test_ids=200, num_distractors=10000,
              num_cameras=1, images_per_id_per_camera=5, protocol="face", name="synthetic_face")
    kw.update(overrides)
    return make_identity_set(seed=seed, **kw)


PRESETS = {"market_like": market_like, "duke_like": duke_like, "face_like": face_like}
