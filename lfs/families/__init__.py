"""The built-in loss families; each file registers its own (``@register_family``).

* ``piecewise_linear``: AM-LFS's space (Li et al., ICCV 2019, Eq. 16-17).
* ``search_softmax``: Search-Softmax's global and local spaces (Wang et al., ICML 2020).
* ``poly1``: Poly-1's epsilon (Leng et al., ICLR 2022), a one-parameter control.
* ``expression``: formulas of primitive operators (CSE-Autoloss, ICLR 2021; AutoLoss-Zero, CVPR 2022).
"""
from . import expression, piecewise_linear, poly, search_softmax  # noqa: F401
