"""The built-in searchers; each file registers its own (``@register_searcher``).

* ``gaussian``: REINFORCE on the mean of a Gaussian over a parametric family (AM-LFS's Eq. 19-20,
  Search-Softmax's reward-guided search), with the modes ``learn``, ``fixed``, ``random`` and
  ``select``.
* ``uniform``: a fresh uniform draw every epoch, nothing learned (Random-Softmax with B = 1).
* ``grid``: a fixed grid, one copy per point for the whole schedule, the best at the end wins.
"""
from . import gaussian, grid, uniform  # noqa: F401
