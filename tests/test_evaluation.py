"""Evaluation protocols: CIFAR top-1 error, features, re-ID CMC/mAP + re-ranking, MegaFace.

Expected values are written out by hand or computed by independent straightforward reference
implementations below (pure Python loops / set algebra following the papers' definitions),
never by the code under test.
"""
import math
import warnings

import numpy as np
import pytest
import torch

from benchmarks.evaluation import (
    accuracy,
    eval_market1501,
    evaluate_reid,
    extract_features,
    megaface_identification,
    megaface_rank1,
    pairwise_distance,
    re_ranking,
    top1_error,
)


# ----------------------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------------------

def test_top1_error_and_accuracy_hand_case():
    scores = torch.tensor([
        [0.1, 0.9, 0.0],   # pred 1, label 1: right
        [0.8, 0.15, 0.05],  # pred 0, label 2: wrong, label only 3rd best
        [0.2, 0.3, 0.5],   # pred 2, label 2: right
        [0.4, 0.6, 0.0],   # pred 1, label 0: wrong, label 2nd best
    ])
    target = torch.tensor([1, 2, 2, 0])
    assert top1_error(scores, target) == pytest.approx(50.0)
    assert accuracy(scores, target) == pytest.approx(50.0)
    assert accuracy(scores, target, k=2) == pytest.approx(75.0)
    assert accuracy(scores, target, k=3) == pytest.approx(100.0)
    # numpy input and 1-D predictions
    assert top1_error(scores.numpy(), target.numpy()) == pytest.approx(50.0)
    assert top1_error(torch.tensor([1, 0, 0, 0]), target) == pytest.approx(50.0)
    assert top1_error(torch.tensor([1, 2, 2, 0]), target) == 0.0


def test_classification_errors():
    with pytest.raises(ValueError):
        top1_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError):
        accuracy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        accuracy(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


# ----------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------

def test_extract_features_flip_sum_and_normalization():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 3, generator=g, dtype=torch.float64)
    embed = lambda x: x @ W  # noqa: E731  (not flip invariant)
    xs = [torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    batches = [(x, torch.zeros(4)) for x in xs]  # DataLoader-style (input, label)
    out = extract_features(embed, batches)
    Wn = W.numpy()
    expected = []
    for x in xs:
        xn = x.numpy()
        for row in xn:
            e = row @ Wn + row[::-1] @ Wn  # embedding of x plus of x reversed along the last dim
            expected.append(e / math.sqrt(sum(v * v for v in e)))
    np.testing.assert_allclose(out.numpy(), np.array(expected), rtol=1e-12, atol=1e-12)
    assert out.shape == (12, 3)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), np.ones(12), rtol=1e-12)

    raw = extract_features(embed, xs, flip=False, normalize=False)
    np.testing.assert_allclose(raw.numpy(), np.concatenate([x.numpy() @ Wn for x in xs]),
                               rtol=1e-12)
    summed = extract_features(embed, xs, flip=True, normalize=False)
    np.testing.assert_allclose(
        summed.numpy(), np.concatenate([x.numpy() @ Wn + x.numpy()[:, ::-1] @ Wn for x in xs]),
        rtol=1e-12)


def test_extract_features_flip_dims_images_no_grad_and_eval_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(2 * 3 * 4, 6))
    model.train()
    x = torch.randn(3, 2, 3, 4)
    out = extract_features(model, [x], flip=True, flip_dims=(-1, -2), normalize=True)
    assert model.training, "training mode must be restored"
    assert not out.requires_grad
    # expected: eval-mode (dropout off) linear of x and of x flipped in H and W
    lin = model[2]
    Wt, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    xn = x.numpy()
    flipped = xn[:, :, ::-1, ::-1]
    e = xn.reshape(3, -1) @ Wt.T + b + flipped.reshape(3, -1) @ Wt.T + b
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    np.testing.assert_allclose(out.numpy(), e, rtol=1e-5, atol=1e-6)
    # deterministic (dropout disabled during extraction)
    out2 = extract_features(model, [x], flip=True, flip_dims=(-1, -2))
    torch.testing.assert_close(out, out2)
    # horizontal flip only differs from the H+W flip
    out3 = extract_features(model, [x], flip=True, flip_dims=(-1,))
    assert not torch.allclose(out, out3)


def _naive_dist(a, b, metric):
    out = np.zeros((len(a), len(b)))
    for i, u in enumerate(a):
        for j, v in enumerate(b):
            if metric == "cosine":
                nu = math.sqrt(sum(x * x for x in u))
                nv = math.sqrt(sum(x * x for x in v))
                out[i, j] = 1.0 - sum(x * y for x, y in zip(u, v)) / (nu * nv)
            else:
                sq = sum((x - y) ** 2 for x, y in zip(u, v))
                out[i, j] = math.sqrt(sq) if metric == "euclidean" else sq
    return out


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_pairwise_distance_against_naive_loop(metric):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 5))
    b = rng.normal(size=(4, 5))
    got = pairwise_distance(torch.from_numpy(a), torch.from_numpy(b), metric)
    np.testing.assert_allclose(got.numpy(), _naive_dist(a.tolist(), b.tolist(), metric),
                               rtol=1e-9, atol=1e-9)
    got32 = pairwise_distance(a.astype(np.float32), b.astype(np.float32), metric)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), _naive_dist(a.tolist(), b.tolist(), metric),
                               rtol=1e-4, atol=1e-5)
    # self distance is (numerically) zero, never negative
    self_d = pairwise_distance(a, a, metric).numpy()
    assert (self_d >= -1e-12).all()
    np.testing.assert_allclose(np.diag(self_d), 0.0, atol=1e-6)


def test_pairwise_distance_rejects_bad_input():
    with pytest.raises(ValueError):
        pairwise_distance(torch.zeros(2, 3), torch.zeros(2, 3), "manhattan")
    with pytest.raises(ValueError):
        pairwise_distance(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------------------------
# re-ID: eval_market1501
# ----------------------------------------------------------------------------------------------

# gallery:          g0     g1     g2     g3     g4     g5     g6
G_PIDS = np.array([1,     0,     1,     2,     1,     2,     4])
G_CAMS = np.array([1,     2,     2,     1,     3,     2,     1])
# queries: q0 (pid 1, cam 1), q1 (pid 2, cam 3), q2 (pid 3, absent), q3 (pid 4, only same cam)
Q_PIDS = np.array([1, 2, 3, 4])
Q_CAMS = np.array([1, 3, 1, 1])
DIST = np.array([
    # g0   g1   g2   g3   g4   g5   g6
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],   # q0
    [0.2, 0.4, 0.5, 0.1, 0.6, 0.3, 0.7],   # q1
    [0.3, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7],   # q2
    [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # q3
])


def test_eval_market1501_hand_case():
    # q0: g0 (pid 1, cam 1) is removed (same pid AND camera). Kept ranking g1 g2 g3 g4 g5 g6,
    #     pids 0 1 2 1 2 4: the distractor pid 0 stays as a negative at rank 1.
    #     relevant at ranks 2 and 4 -> CMC 0 1 1 1 1, AP = (1/2 + 2/4) / 2 = 0.5
    # q1: nothing removed (no pid-2 image from camera 3). Ranking g3 g0 g5 g1 g2 g4 g6,
    #     relevant at ranks 1 and 3 -> CMC 1 1 1 1 1, AP = (1/1 + 2/3) / 2 = 5/6
    # q2: pid 3 not in the gallery -> skipped
    # q3: its only match g6 is from the same camera, removed -> skipped
    cmc, mAP = eval_market1501(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert cmc.dtype == np.float32 and cmc.shape == (5,)
    np.testing.assert_allclose(cmc, [0.5, 1.0, 1.0, 1.0, 1.0], rtol=1e-7)
    assert mAP == pytest.approx((0.5 + 5.0 / 6.0) / 2.0, abs=1e-12)

    # only q1: CMC 1..., AP 5/6
    cmc1, map1 = eval_market1501(DIST[1:2], Q_PIDS[1:2], G_PIDS, Q_CAMS[1:2], G_CAMS, max_rank=3)
    np.testing.assert_allclose(cmc1, [1.0, 1.0, 1.0])
    assert map1 == pytest.approx(5.0 / 6.0, abs=1e-12)


def test_eval_market1501_same_camera_removal_and_distractor_matter():
    # q0 alone. If its same-camera g0 were kept, it would be a rank-1 hit (CMC 1 1);
    # if the distractor g1 (pid 0) were dropped, the ranking g2 g3 g4 g5 g6 would give
    # CMC 1 1 and AP (1 + 2/3) / 2. The protocol gives CMC 0 1 and AP 0.5.
    cmc, mAP = eval_market1501(DIST[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS, max_rank=2)
    np.testing.assert_allclose(cmc, [0.0, 1.0])
    assert mAP == pytest.approx(0.5)


def test_eval_market1501_junk_handling():
    # add a junk gallery image (pid -1, cam 1) nearest to every query, and a junk query
    g_pids = np.append(G_PIDS, -1)
    g_cams = np.append(G_CAMS, 1)
    dist = np.hstack([DIST, np.full((4, 1), 0.05)])
    q_pids = np.append(Q_PIDS, -1)
    q_cams = np.append(Q_CAMS, 2)
    dist = np.vstack([dist, np.linspace(0.1, 0.8, 8)[None]])
    # default: junk dropped / skipped as torchreid's loader does -> same as the hand case
    cmc, mAP = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    np.testing.assert_allclose(cmc, [0.5, 1.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx((0.5 + 5.0 / 6.0) / 2.0)
    # junk_pid=None: bare torchreid function. The junk image is a negative at rank 1 for q0
    # and q1; the junk query (pid -1, cam 2) matches the junk gallery image (cam 1).
    #   q0 kept: junk g1 g2 g3 g4 g5 g6 -> rel at 3, 5: CMC 0 0 1 1 1, AP (1/3 + 2/5)/2 = 11/30
    #   q1: junk g3 g0 g5 ... -> rel at 2, 4: CMC 0 1 1 1 1, AP (1/2 + 2/4)/2 = 1/2
    #   q(-1): its row puts the junk gallery image last (rank 8 of 8): CMC 0 0 0 0 0, AP 1/8
    cmc, mAP = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5, junk_pid=None)
    np.testing.assert_allclose(cmc, [0.0, 1 / 3, 2 / 3, 2 / 3, 2 / 3], rtol=1e-6)
    assert mAP == pytest.approx((11 / 30 + 0.5 + 1 / 8) / 3.0, abs=1e-12)


def test_eval_market1501_max_rank_clipped_with_warning():
    with pytest.warns(UserWarning):
        cmc, mAP = eval_market1501(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    assert cmc.shape == (7,)
    # q0 keeps only 6 entries: its curve is continued with its last value (1)
    np.testing.assert_allclose(cmc, [0.5] + [1.0] * 6)
    assert mAP == pytest.approx((0.5 + 5.0 / 6.0) / 2.0)


def test_eval_market1501_no_valid_query_raises():
    with pytest.raises(ValueError):
        eval_market1501(DIST[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS, max_rank=5)


def brute_force_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank, junk=-1):
    """Straight from the definitions: loops, sorted(), precision@r at each hit."""
    cmcs, aps = [], []
    for qi in range(len(q_pids)):
        if q_pids[qi] == junk:
            continue
        ranked = sorted(range(len(g_pids)), key=lambda gi: dist[qi][gi])
        ranked = [gi for gi in ranked
                  if g_pids[gi] != junk
                  and not (g_pids[gi] == q_pids[qi] and g_cams[gi] == q_cams[qi])]
        rel = [1 if g_pids[gi] == q_pids[qi] else 0 for gi in ranked]
        if sum(rel) == 0:
            continue
        first = rel.index(1)  # 0-based rank of the first hit
        cmcs.append([1.0 if r >= first else 0.0 for r in range(max_rank)])
        hits, precisions = 0, []
        for r, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                precisions.append(hits / r)
        aps.append(sum(precisions) / len(precisions))
    n = len(cmcs)
    return [sum(c[r] for c in cmcs) / n for r in range(max_rank)], sum(aps) / n


@pytest.mark.parametrize("seed", range(6))
def test_eval_market1501_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    nq, ng = int(rng.integers(5, 30)), int(rng.integers(60, 120))
    n_ids = int(rng.integers(3, 12))
    q_pids = rng.integers(0, n_ids, nq)
    g_pids = rng.integers(-1, n_ids, ng)  # includes junk (-1) and distractors (0)
    q_cams = rng.integers(0, 3, nq)
    g_cams = rng.integers(0, 3, ng)
    dist = rng.random((nq, ng))  # continuous: no ties
    max_rank = 20
    exp_cmc, exp_map = brute_force_market1501(dist.tolist(), q_pids.tolist(), g_pids.tolist(),
                                              q_cams.tolist(), g_cams.tolist(), max_rank)
    cmc, mAP = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    np.testing.assert_allclose(cmc, exp_cmc, rtol=1e-6, atol=1e-7)
    assert mAP == pytest.approx(exp_map, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# re-ID: k-reciprocal re-ranking
# ----------------------------------------------------------------------------------------------

def paper_rerank(full, n_query, k1, k2, lam):
    """Independent k-reciprocal re-ranking from Zhong et al. (CVPR 2017), float64, sets.

    Conventions of the reference implementation (documented in reid.re_ranking):
    d = squared distance / row max; the k-nearest list N(p, k) holds k+1 items (p first);
    R*(p) adds R(q, round(k/2)) when strictly more than 2/3 of it lies in R(p, k);
    Gaussian-kernel weights normalized on R*(p); local expansion over the k2 nearest (p incl.);
    Jaccard distance 1 - sum(min)/sum(max) (Eq. 10); d* = (1-lambda) d_J + lambda d (Eq. 12).
    """
    n = len(full)
    d = [[full[i][j] ** 2 for j in range(n)] for i in range(n)]
    d = [[v / max(row) for v in row] for row in d]
    order = [sorted(range(n), key=lambda j: d[i][j]) for i in range(n)]

    def N(p, k):
        return order[p][: k + 1]

    def R(p, k):
        return {g for g in N(p, k) if p in N(g, k)}

    half = int(round(k1 / 2))
    V = [[0.0] * n for _ in range(n)]
    for p in range(n):
        rp = R(p, k1)
        star = set(rp)
        for q in rp:
            rq = R(q, half)
            if len(rq & rp) > 2.0 / 3.0 * len(rq):
                star |= rq
        z = sum(math.exp(-d[p][g]) for g in star)
        for g in star:
            V[p][g] = math.exp(-d[p][g]) / z
    if k2 != 1:
        V = [[sum(V[q][j] for q in order[p][:k2]) / k2 for j in range(n)] for p in range(n)]
    out = [[0.0] * (n - n_query) for _ in range(n_query)]
    for p in range(n_query):
        for g in range(n_query, n):
            mins = sum(min(V[p][j], V[g][j]) for j in range(n))
            maxs = sum(max(V[p][j], V[g][j]) for j in range(n))
            out[p][g - n_query] = (1 - lam) * (1 - mins / maxs) + lam * d[p][g]
    return np.array(out)


def _rerank_case(seed, nq, ng, dim=4):
    rng = np.random.default_rng(seed)
    # clustered points so that k-reciprocal sets are non-trivial
    centers = rng.normal(size=(5, dim)) * 3
    pts = centers[rng.integers(0, 5, nq + ng)] + rng.normal(size=(nq + ng, dim))
    full = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return full[:nq, nq:], full[:nq, :nq], full[nq:, nq:], full


@pytest.mark.parametrize("seed,nq,ng,k1,k2,lam", [
    (0, 4, 26, 20, 6, 0.3),   # the paper's parameters
    (1, 6, 30, 6, 3, 0.3),
    (2, 5, 20, 5, 1, 0.0),    # k2 == 1: no local expansion; round(5/2) = 2 (banker's)
    (3, 3, 17, 7, 2, 0.5),    # round(7/2) = 4
])
def test_re_ranking_matches_independent_paper_implementation(seed, nq, ng, k1, k2, lam):
    q_g, q_q, g_g, full = _rerank_case(seed, nq, ng)
    got = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    expected = paper_rerank(full.tolist(), nq, k1, k2, lam)
    assert got.shape == (nq, ng) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


def test_re_ranking_lambda_one_is_normalized_squared_original_distance():
    q_g, q_q, g_g, _ = _rerank_case(4, 5, 25)
    got = re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=1.0)
    # reference: original_dist = (d**2 / column max).T of the symmetric (Q+G) matrix, i.e.
    # each query row of squared distances divided by its max over queries and gallery
    row_max = np.maximum((q_q ** 2).max(axis=1), (q_g ** 2).max(axis=1))
    np.testing.assert_allclose(got, q_g ** 2 / row_max[:, None], rtol=1e-6)


def test_re_ranking_lambda_zero_is_a_jaccard_distance_in_unit_interval():
    q_g, q_q, g_g, _ = _rerank_case(5, 5, 25)
    got = re_ranking(q_g, q_q, g_g, lambda_value=0.0)
    assert (got >= -1e-6).all() and (got <= 1 + 1e-6).all()
    assert got.min() < 0.9


def test_re_ranking_invariances():
    q_g, q_q, g_g, _ = _rerank_case(6, 6, 24)
    base = re_ranking(q_g, q_q, g_g)
    # scale invariance (squared, then row-normalized)
    np.testing.assert_allclose(re_ranking(3.7 * q_g, 3.7 * q_q, 3.7 * g_g), base, atol=1e-6)
    # permuting the gallery permutes the columns
    p = np.random.default_rng(0).permutation(24)
    np.testing.assert_allclose(re_ranking(q_g[:, p], q_q, g_g[np.ix_(p, p)]), base[:, p],
                               atol=1e-6)
    # permuting the queries permutes the rows
    r = np.random.default_rng(1).permutation(6)
    np.testing.assert_allclose(re_ranking(q_g[r], q_q[np.ix_(r, r)], g_g), base[r], atol=1e-6)
    # only the pool matters: moving gallery item 0 to the query side changes nothing else
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    order = [6] + list(range(6)) + list(range(7, 30))  # new queries: old g0, then old queries
    f2 = full[np.ix_(order, order)]
    moved = re_ranking(f2[:7, 7:], f2[:7, :7], f2[7:, 7:])
    np.testing.assert_allclose(moved[1:], base[:, 1:], atol=1e-6)
    # torch tensors are accepted
    np.testing.assert_allclose(
        re_ranking(torch.from_numpy(q_g), torch.from_numpy(q_q), torch.from_numpy(g_g)), base)


def test_re_ranking_rejects_inconsistent_shapes():
    q_g, q_q, g_g, _ = _rerank_case(7, 3, 10)
    with pytest.raises(ValueError):
        re_ranking(q_g, q_q, g_g[:-1, :-1])


def test_re_ranking_toy_case_outlier_is_pushed_down():
    # The query q sits at the edge of its identity's tight group g0..g2; an outlier o of another
    # identity is q's raw nearest neighbour but o's own 4 nearest neighbours are its group B, so
    # o is not a k-reciprocal neighbour of q (k1 = 4) while g0..g2 are (q is among their 4
    # nearest). With lambda = 0 (pure Jaccard, k2 = 1): V[q] and V[o] have disjoint supports,
    # so d*(q, o) = 1, and g0..g2 share support with q, so d* < 1: the outlier drops below them.
    q = np.array([[0.0, 0.0]])
    g = np.array([[0.3, 0.0], [0.35, 0.1], [0.35, -0.1],                     # g0..g2
                  [-0.25, 0.0],                                              # o
                  [-0.4, 0.0], [-0.42, 0.05], [-0.42, -0.05], [-0.45, 0.0]])  # B
    pts = np.vstack([q, g])
    full = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    assert np.argmin(full[0, 1:]) == 3  # raw: the outlier is rank 1
    rr = re_ranking(full[:1, 1:], full[:1, :1], full[1:, 1:], k1=4, k2=1, lambda_value=0.0)
    assert rr[0, 3] == pytest.approx(1.0)
    assert rr[0, :3].max() < 0.9
    assert set(np.argsort(rr[0])[:3]) == {0, 1, 2}


# ----------------------------------------------------------------------------------------------
# re-ID: evaluate_reid
# ----------------------------------------------------------------------------------------------

def test_evaluate_reid_matches_brute_force_and_rerank_lambda_one():
    rng = np.random.default_rng(3)
    n_ids = 8
    centers = rng.normal(size=(n_ids, 6))
    g_pids = rng.integers(0, n_ids, 60)
    q_pids = rng.integers(1, n_ids, 12)
    g_cams = rng.integers(0, 3, 60)
    q_cams = rng.integers(0, 3, 12)
    gf = centers[g_pids] + 0.7 * rng.normal(size=(60, 6))
    qf = centers[q_pids] + 0.7 * rng.normal(size=(12, 6))
    res = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams)
    assert set(res) == {"mAP", "rank1", "rank5", "rank10"}
    dist = _naive_dist(qf.tolist(), gf.tolist(), "euclidean")
    cmc, mAP = brute_force_market1501(dist.tolist(), q_pids.tolist(), g_pids.tolist(),
                                      q_cams.tolist(), g_cams.tolist(), 10)
    assert res["mAP"] == pytest.approx(100 * mAP, abs=1e-6)
    assert res["rank1"] == pytest.approx(100 * cmc[0], abs=1e-4)
    assert res["rank5"] == pytest.approx(100 * cmc[4], abs=1e-4)
    assert res["rank10"] == pytest.approx(100 * cmc[9], abs=1e-4)
    # re-ranking with lambda=1 is a per-query monotone transform: same ranking, same numbers
    rk1 = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=True, lambda_value=1.0)
    for key in res:
        assert rk1[key] == pytest.approx(res[key], abs=1e-4)
    # the default re-ranking runs and returns percentages
    rk = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=True)
    assert all(0.0 <= v <= 100.0 for v in rk.values())
    # metric choice does not change the ranking of the plain evaluation
    for metric in ("sqeuclidean",):
        other = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric)
        for key in res:
            assert other[key] == pytest.approx(res[key], abs=1e-4)


# ----------------------------------------------------------------------------------------------
# MegaFace
# ----------------------------------------------------------------------------------------------

def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_megaface_hand_cases():
    probes = torch.tensor([_unit(0), _unit(30)], dtype=torch.float64)
    ids = [7, 7]
    # d(a1, a2) = 30 degrees apart
    # distractor at 10 deg: nearer than the target for both probes -> 0 %
    assert megaface_rank1(probes, ids, torch.tensor([_unit(10)], dtype=torch.float64)) == 0.0
    # distractor at -40 deg: 40 and 70 deg away, farther than 30 -> 100 %
    assert megaface_rank1(probes, ids, torch.tensor([_unit(-40)], dtype=torch.float64)) == 100.0
    # distractor at 35 deg: 35 deg from a1 (hit), 5 deg from a2 (miss) -> 50 %
    for metric in ("cosine", "euclidean"):
        r = megaface_rank1(probes, ids, torch.tensor([_unit(35)], dtype=torch.float64),
                           metric=metric)
        assert r == 50.0
    # rank-2 with distractors at 35 and 200 deg: a2 has one nearer distractor -> still a hit
    res = megaface_identification(probes, ids,
                                  torch.tensor([_unit(35), _unit(200)], dtype=torch.float64),
                                  ranks=(1, 2))
    assert res == {1: 50.0, 2: 100.0}


def test_megaface_pair_counting_and_singletons():
    # identity A: 3 images at 0, 10, 20 deg (6 ordered pairs); identity B: a single image
    # (no pair). Distractor at 25 deg: from 0 -> 25 deg, from 10 -> 15, from 20 -> 5.
    #   probe 0: targets 10 (10 < 25 hit), 20 (20 < 25 hit)
    #   probe 10: targets 0 (10 < 15 hit), 20 (10 < 15 hit)
    #   probe 20: targets 0 (20 > 5 miss), 10 (10 > 5 miss)   -> 4 / 6
    probes = torch.tensor([_unit(0), _unit(10), _unit(20), _unit(180)], dtype=torch.float64)
    ids = np.array(["A", "A", "A", "B"])
    r = megaface_rank1(probes, ids, torch.tensor([_unit(25)], dtype=torch.float64))
    assert r == pytest.approx(100 * 4 / 6)


def test_megaface_perfect_features_and_edge_cases():
    rng = np.random.default_rng(0)
    n_ids, per_id, dim = 6, 4, 16
    eye = np.eye(dim)
    probes = np.repeat(eye[:n_ids], per_id, axis=0) + 0.01 * rng.normal(size=(n_ids * per_id, dim))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    ids = np.repeat(np.arange(n_ids), per_id)
    distractors = eye[n_ids:][rng.integers(0, dim - n_ids, 50)] + 0.01 * rng.normal(size=(50, dim))
    assert megaface_rank1(probes, ids, distractors) == 100.0
    # no distractors at all: every pair is a hit
    assert megaface_rank1(probes, ids, distractors, num_distractors=0) == 100.0
    with pytest.raises(ValueError):
        megaface_rank1(probes, ids, distractors, num_distractors=51)
    with pytest.raises(ValueError):
        megaface_rank1(probes[:3], [0, 1, 2], distractors)  # no identity with 2 images
    # exact tie: a distractor identical to a target image
    p = torch.tensor([_unit(0), _unit(30)], dtype=torch.float64)
    d = torch.tensor([_unit(30)], dtype=torch.float64)
    # probe 0: target at 30 deg ties with the distractor; probe 1: target 30 deg, distractor 0
    assert megaface_rank1(p, [1, 1], d, ties="miss") == 0.0
    assert megaface_rank1(p, [1, 1], d, ties="hit") == 50.0


def brute_force_megaface(probes, ids, distractors, rank):
    """Loops over ordered pairs; target j is put among the distractors; rank of j for probe i."""
    def cosd(u, v):
        return 1.0 - sum(a * b for a, b in zip(u, v)) / (
            math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))
    hits = pairs = 0
    for i in range(len(probes)):
        d_dis = [cosd(probes[i], x) for x in distractors]
        for j in range(len(probes)):
            if j == i or ids[j] != ids[i]:
                continue
            pairs += 1
            d_t = cosd(probes[i], probes[j])
            n_nearer = sum(1 for v in d_dis if v <= d_t)  # ties count against the target
            if n_nearer < rank:
                hits += 1
    return 100.0 * hits / pairs


@pytest.mark.parametrize("seed", range(3))
def test_megaface_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_ids, dim = 7, 8
    centers = rng.normal(size=(n_ids, dim))
    ids = rng.integers(0, n_ids, 30)
    probes = centers[ids] + 0.9 * rng.normal(size=(30, dim))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    distractors = rng.normal(size=(80, dim))
    distractors /= np.linalg.norm(distractors, axis=1, keepdims=True)
    res = megaface_identification(probes, ids, distractors, ranks=(1, 3), batch=7)
    for rank in (1, 3):
        assert res[rank] == pytest.approx(
            brute_force_megaface(probes.tolist(), ids.tolist(), distractors.tolist(), rank))
    # first-N subsample == passing the first N rows; euclidean == cosine on unit vectors
    sub = megaface_rank1(probes, ids, distractors, num_distractors=10, batch=4)
    assert sub == pytest.approx(
        brute_force_megaface(probes.tolist(), ids.tolist(), distractors[:10].tolist(), 1))
    assert megaface_rank1(probes, ids, distractors, metric="euclidean") == pytest.approx(res[1])
    # torch float32 input gives the same rate here (no near-ties in this data)
    assert megaface_rank1(torch.tensor(probes, dtype=torch.float32), torch.tensor(ids),
                          torch.tensor(distractors, dtype=torch.float32)) == pytest.approx(res[1])


def torchreid_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid's ``eval_market1501`` as it is written there: one query at a time (the loop
    ``eval_market1501`` computed before it did all queries at once)."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, num_valid_q = [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        if cmc.shape[0] < max_rank:
            cmc = np.concatenate([cmc, np.full(max_rank - cmc.shape[0], cmc[-1], cmc.dtype)])
        all_cmc.append(cmc)
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum() / np.arange(1.0, raw_cmc.shape[0] + 1.0)
        tmp_cmc = tmp_cmc * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    all_cmc = np.asarray(all_cmc).astype(np.float32)
    return (all_cmc.sum(0) / num_valid_q).astype(np.float32), float(np.mean(all_ap))


@pytest.mark.parametrize("seed", range(12))
def test_eval_market1501_is_torchreids_loop_bit_for_bit(seed):
    """All queries at once give torchreid's per-query numbers exactly (==, not approx): galleries
    past numpy's pairwise-summation block (128) and with many matches per query, same-camera
    removals, queries without a match, ties in the distances, galleries shorter than max_rank."""
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 60)), int(rng.choice([5, 40, 129, 300, 1100]))
    ids = int(rng.integers(2, 30))
    g_pids, q_pids = rng.integers(0, ids, num_g), rng.integers(1, ids + 3, num_q)
    g_cams, q_cams = rng.integers(0, 4, num_g), rng.integers(0, 4, num_q)
    q_pids[0], g_pids[0], g_cams[0], q_cams[0] = 1, 1, 0, 1  # at least one valid query
    dist = rng.random((num_q, num_g)).astype(np.float32)
    if seed % 3 == 0:  # ties
        dist = np.round(dist * 8) / 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmc, mAP = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50, junk_pid=None)
    ref_cmc, ref_mAP = torchreid_loop(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    assert cmc.dtype == ref_cmc.dtype and np.array_equal(cmc, ref_cmc)
    assert mAP == ref_mAP


def test_ranks_by_counting_equal_sorting_or_decline_on_ties():
    from benchmarks.evaluation.reid import _ranks_by_counting, _ranks_by_sorting

    rng = np.random.default_rng(0)
    dist = rng.random((30, 200)).astype(np.float32)
    g_pids, q_pids = rng.integers(0, 20, 200), rng.integers(0, 20, 30)
    same = g_pids[None, :] == q_pids[:, None]
    keep = ~(same & (rng.integers(0, 3, (30, 200)) == 0))  # some same-camera removals
    counted, sorted_ = _ranks_by_counting(dist, same, keep, block=1000), _ranks_by_sorting(dist, same, keep)
    assert counted is not None and all(np.array_equal(a, b) for a, b in zip(counted, sorted_))
    # a kept non-match at exactly a true match's distance: the order would be the sort's to pick
    q, g = np.argwhere(same & keep)[0]
    other = np.flatnonzero(~same[q] & keep[q])[0]
    dist[q, other] = dist[q, g]
    assert _ranks_by_counting(dist, same, keep) is None
    dist[q, other] = np.nan
    assert _ranks_by_counting(dist, same, keep) is None
