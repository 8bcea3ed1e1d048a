"""Full-tier data: torch Datasets (images on disk) streamed through DataLoaders.

:class:`DatasetTask` is a :class:`lfs.SupervisedTask` whose batches come from DataLoaders: each
copy's epoch order is fixed by its seed (a seeded ``torch.Generator`` for the sampler, and worker
seeds derived from it for the random augmentation), so the sequential and vectorized executors
see the same batches, and a rerun the same ones.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import lfs


def _first_two(batch) -> tuple[Tensor, Tensor]:
    """(image, label) from a dataset item batch: (img, label) or (img, pid, camid)."""
    return batch[0], batch[1]


class DatasetTask(lfs.SupervisedTask):
    """A SupervisedTask over torch Datasets.

    ``train`` yields ``(image, label, ...)``; ``val`` yields ``(image, target, ...)`` where target
    is whatever ``reward_fn`` expects next to the scores (class labels, or indices into the
    validation identities for a retrieval reward).
    """

    def __init__(self, model_fn, optimizer_fn, loss_fn, train: Dataset, val: Dataset, batch_size: int,
                 num_workers: int = 4, pin_memory: bool = False, **kwargs):
        super().__init__(model_fn, optimizer_fn, loss_fn, None, None, batch_size, **kwargs)
        self.train_set, self.val_set = train, val
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        if len(train) < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the training split ({len(train)} examples)")

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int | None) -> DataLoader:
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, generator=g,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=False)

    def num_batches(self) -> int:
        """Minibatches per training epoch (the last incomplete one is dropped)."""
        return len(self.train_set) // self.batch_size

    def train_batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = self._loader(self.train_set, self.batch_size, True, seed)
        if self.num_workers > 0:  # DataLoader seeds each worker from the copy's generator
            for batch in loader:
                yield _first_two(batch)
            return
        # In-process loading: random augmentation draws from the global torch RNG, which the
        # vectorized executor would consume in an interleaved order across copies. Each copy's
        # iterator therefore owns an RNG stream, swapped in around every batch it fetches.
        it = iter(loader)
        state = torch.Generator().manual_seed(seed ^ 0x5EED).get_state()
        while True:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(state)
                try:
                    batch = next(it)
                except StopIteration:
                    return
                state = torch.get_rng_state()
            yield _first_two(batch)

    def val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self._loader(self.val_set, self.eval_batch_size, False, None):
            yield _first_two(batch)


class Indexed(Dataset):
    """Wrap a dataset so that item i is ``(image, i)``: a retrieval reward receives indices and
    looks the pids / camids up itself."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i][0], i


class Concat(Dataset):
    def __init__(self, *parts: Dataset):
        self.parts = parts
        self.offsets = [0]
        for p in parts:
            self.offsets.append(self.offsets[-1] + len(p))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i):
        for k, p in enumerate(self.parts):
            if i < self.offsets[k + 1]:
                return p[i - self.offsets[k]]
        raise IndexError(i)


def labels_of(dataset: Dataset, position: int) -> Tensor:
    """Field ``position`` of every item's metadata (pid = 1, camid = 2), without loading images
    when the dataset exposes ``items`` (path, pid, camid) as the re-ID datasets do."""
    items = getattr(dataset, "items", None)
    if items is not None:
        return torch.tensor([it[position] for it in items])
    return torch.tensor([int(dataset[i][position]) for i in range(len(dataset))])
