"""LFS Bench's Hydra sweeper (``hydra/sweeper=lfs_bench``, the suite's default): see :mod:`.sweeper`."""
