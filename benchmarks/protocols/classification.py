"""Classification: top-1 test error; the reward is top-1 accuracy on the validation split
(AM-LFS Section 4.1). Training labels may carry symmetric label noise (``noise``)."""
from __future__ import annotations

import torch

from .base import Protocol, batches, device_of, is_streaming, outputs, register_protocol


@register_protocol("classification")
class Classification(Protocol):
    def loader_kwargs(self, cfg):
        return {**super().loader_kwargs(cfg), "noise": cfg["noise"]}

    def reward_setup(self, cfg, data):
        return {"val": data.val}  # lfs's default reward: top-1 accuracy of the scores

    @torch.no_grad()
    def evaluate(self, cfg, data, model):
        from benchmarks.evaluation import top1_error

        if is_streaming(data):
            logits = outputs(model, batches(data.test, cfg), device_of(cfg), logits=True)
            return {"top1_error": float(top1_error(logits, torch.tensor(data.test.targets)))}
        x, y = data.test
        return {"top1_error": float(top1_error(outputs(model, batches(x, cfg), logits=True), y))}
