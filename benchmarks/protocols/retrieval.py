"""Retrieval / re-ID: CMC rank-k and mAP of queries against a gallery (Market-1501 protocol),
optionally with k-reciprocal re-ranking (``rerank=true``: the paper's "(RK)" rows). The reward is
the mAP of held-out identities' validation queries against their gallery (AM-LFS Section 4.1)."""
from __future__ import annotations

from typing import Callable

import torch

from .base import Protocol, batches, device_of, is_streaming, outputs, register_protocol


def reid_reward(nq: int, pids: torch.Tensor, camids: torch.Tensor) -> Callable:
    """mAP (the paper's re-ID reward) of query embeddings [:nq] against gallery [nq:]."""
    from benchmarks.evaluation import evaluate_reid

    def reward(emb, _targets):
        r = evaluate_reid(emb[:nq], emb[nq:], pids[:nq], pids[nq:], camids[:nq], camids[nq:])
        return r["mAP"] / 100.0

    return reward


def labels(split, k: int) -> torch.Tensor:
    """Column ``k`` (1: identity, 2: camera) of a split: a tuple of tensors or a Dataset."""
    if isinstance(split, tuple):
        return split[k]
    from benchmarks.streaming import labels_of

    return labels_of(split, k)


def sphere_reid_transforms(cfg: dict) -> dict:
    """SphereReID-style input pipeline: resize to the model's input size, flip + pad-crop for
    training, ImageNet normalization."""
    from torchvision import transforms as T

    h, w = cfg["model"].get("kwargs", {}).get("input_size", (256, 128))
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train = T.Compose([T.Resize((h, w)), T.RandomHorizontalFlip(), T.Pad(10), T.RandomCrop((h, w)), T.ToTensor(), norm])
    test = T.Compose([T.Resize((h, w)), T.ToTensor(), norm])
    return {"train_transform": train, "test_transform": test}


#: image pipelines a dataset config may name (``dataset.transforms``)
TRANSFORMS = {"sphere_reid": sphere_reid_transforms}


@register_protocol("retrieval")
class Retrieval(Protocol):
    def loader_kwargs(self, cfg):
        kwargs = super().loader_kwargs(cfg)
        name = cfg["dataset"].get("transforms")
        if name:
            kwargs.update(TRANSFORMS[name](cfg))
        return kwargs

    def reward_setup(self, cfg, data):
        vq, vg = data.val_query, data.val_gallery
        pids = torch.cat([labels(vq, 1), labels(vg, 1)])
        camids = torch.cat([labels(vq, 2), labels(vg, 2)])
        if is_streaming(data):  # images from disk: loaded and embedded 256 at a time
            from benchmarks.streaming import Concat, Indexed

            val, eval_batch_size = Indexed(Concat(vq, vg)), 256
        else:  # in-memory features: one pass
            val, eval_batch_size = (torch.cat([vq[0], vg[0]]), pids), 100000
        return {"val": val, "predict_fn": lambda emb: emb, "reward_fn": reid_reward(len(labels(vq, 1)), pids, camids),
                "eval_kwargs": {"embed": True}, "eval_batch_size": eval_batch_size}

    def features(self, cfg, data, model):
        """Embeddings and (pid, camid) labels of the test query and gallery."""
        dev = device_of(cfg) if is_streaming(data) else None
        q_in, g_in = (data.query, data.gallery) if is_streaming(data) else (data.query[0], data.gallery[0])
        return ((outputs(model, batches(q_in, cfg), dev), labels(data.query, 1), labels(data.query, 2)),
                (outputs(model, batches(g_in, cfg), dev), labels(data.gallery, 1), labels(data.gallery, 2)))

    @torch.no_grad()
    def evaluate(self, cfg, data, model):
        model.eval()
        return self.metrics(cfg, *self.features(cfg, data, model))

    def metrics(self, cfg, query, gallery) -> dict:
        from benchmarks.evaluation import evaluate_reid

        (qf, qp, qc), (gf, gp, gc) = query, gallery
        metrics = {k: float(v) for k, v in evaluate_reid(qf, gf, qp, gp, qc, gc).items()}
        if cfg.get("rerank"):  # the "(RK)" rows: k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)
            rk = evaluate_reid(qf, gf, qp, gp, qc, gc, rerank=True)
            metrics.update({f"{k}_rk": float(v) for k, v in rk.items()})
        return metrics
