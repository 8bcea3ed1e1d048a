"""The face tables' input pipeline (SphereFace's): fit to the model's input size, flip for
training, normalize with mean 0.5 and std 128/255."""
from __future__ import annotations

from typing import Sequence

# SphereFace / CosFace: aligned 112x96 crops, pixels mapped to (p - 127.5) / 128, mirrored at
# random for training. ToTensor gives p / 255, so Normalize(0.5, 128 / 255) is that mapping.
FACE_MEAN = (0.5, 0.5, 0.5)
FACE_STD = (128 / 255,) * 3
FITS = ("resize", "center_crop")


class CenterCropToAspect:
    """Crop the centre of a PIL image to the aspect ratio ``h : w`` (e.g. 112x112 aligned crops
    to 112x96); picklable, for DataLoader workers."""

    def __init__(self, h: int, w: int):
        self.h, self.w = int(h), int(w)

    def __call__(self, img):
        W, H = img.size
        if H * self.w > W * self.h:  # too tall
            nh = round(W * self.h / self.w)
            top = (H - nh) // 2
            return img.crop((0, top, W, top + nh))
        nw = round(H * self.w / self.h)
        left = (W - nw) // 2
        return img.crop((left, 0, left + nw, H))

    def __repr__(self) -> str:
        return f"CenterCropToAspect({self.h}, {self.w})"


def face_transforms(input_size: Sequence[int] = (112, 96), fit: str = "resize") -> dict:
    """``{"train_transform", "test_transform"}`` for aligned face crops: brought to
    ``input_size`` (``fit="resize"``, or ``"center_crop"`` to the aspect ratio first, e.g. for
    112x112 crops), ``(p - 127.5) / 128``; training adds a random horizontal flip. Test features
    are flip-summed by the evaluation, not here."""
    from torchvision import transforms as T

    if fit not in FITS:
        raise ValueError(f"dataset.fit must be one of {', '.join(FITS)}, got {fit!r}")
    h, w = (int(d) for d in input_size)
    size = ([CenterCropToAspect(h, w)] if fit == "center_crop" else []) + [T.Resize((h, w))]
    norm = [T.ToTensor(), T.Normalize(FACE_MEAN, FACE_STD)]
    return {"train_transform": T.Compose(size + [T.RandomHorizontalFlip()] + norm),
            "test_transform": T.Compose(size + norm)}
