"""Face identification: rank-1 with distractors (AM-LFS Table 3). On disk (full tier), training on
CASIA-WebFace and MegaFace Challenge 1 evaluation with the devkit's lists (``dataset.megaface``);
in memory (the mini tier's synthetic identities), every non-distractor image is a probe of its
identity with the distractors (pid 0) standing between each probe pair. The reward is the
validation mAP of held-out identities, as for retrieval."""
from __future__ import annotations

import os

import torch

from .base import device_of, is_streaming, register_protocol, subsample
from .retrieval import Retrieval


@register_protocol("face")
class Face(Retrieval):
    def load(self, cfg):
        ds = cfg["dataset"]
        if not ds.get("megaface"):  # an identity set in the dataset registry
            return super().load(cfg)
        # MegaFace Challenge 1: CASIA-WebFace training + the devkit's lists, all checked now
        from benchmarks.config import ConfigError
        from benchmarks.data import DatasetError
        from benchmarks.data.faces import load_megaface, megaface_options

        kwargs = {k: v for k, v in self.loader_kwargs(cfg).items() if k != "seed"}
        try:
            data = load_megaface(megaface=megaface_options(ds["megaface"]), seed=cfg["data_seed"],
                                 input_size=(cfg["model"].get("kwargs") or {}).get("input_size", (112, 96)),
                                 fit=ds.get("fit", "resize"), **kwargs)
        except DatasetError:  # missing or malformed files: its own one line
            raise
        except ValueError as e:  # a bad dataset.* value: one line naming the key
            raise ConfigError(str(e)) from None
        return subsample(data, cfg.get("subsample"))

    @torch.no_grad()
    def evaluate(self, cfg, data, model):
        if not is_streaming(data):
            return super().evaluate(cfg, data, model)
        # MegaFace Challenge 1 rank-1 with the devkit's lists
        from benchmarks.evaluation.megaface import evaluate_megaface

        model.eval()
        mf = cfg["dataset"].get("megaface") or {}
        out = mf.get("features_out")
        metrics, info = evaluate_megaface(
            lambda x: model(x, embed=True), data.megaface, batch_size=int(mf.get("batch_size", 256)),
            workers=int(cfg.get("workers", 4)), device=device_of(cfg), metric=mf.get("metric", "cosine"),
            ties=mf.get("ties", "miss"), score_batch=int(mf.get("score_batch", 4096)),
            features_out=os.path.join(out, cfg["method"], f"seed={cfg['seed']}") if out else None,
            file_ending=mf.get("file_ending", "_lfs.bin"), seed=cfg["seed"])
        data.info.update(info)  # the runner puts data.info in the row's extra["data"]
        return metrics

    def metrics(self, cfg, query, gallery) -> dict:
        """Rank-1 identification among the distractors (pid 0), and the re-ID mAP beside it."""
        from benchmarks.evaluation import megaface_rank1

        reid = super().metrics({**cfg, "rerank": False}, query, gallery)
        (qf, qp, _), (gf, gp, _) = query, gallery
        feats, pids = torch.cat([qf, gf]), torch.cat([qp, gp])
        probes = pids > 0
        return {"rank1": float(megaface_rank1(feats[probes], pids[probes], feats[~probes])), "reid_mAP": reid["mAP"]}
