"""A timm-style registry of the hand-crafted baseline losses.

Each loss file registers itself with :func:`register`; :func:`get` looks an entry up by name and
:func:`available` lists the names. An entry (:class:`BaselineLoss`) holds the functional form
``fn(cos, target, scale=..., <hyper-parameters>, reduction="mean")`` and/or the module form
(a :class:`lfs.heads.HeadLoss` subclass that owns its class weights).

Usage::

    @register("cosface", fn=cosface, reference="Wang et al., CVPR 2018")
    class CosFaceLoss(HeadLoss): ...

    @register("my_loss")            # on a function: ``fn`` is the decorated object
    def my_loss(cos, target, scale=1.0, reduction="mean"): ...

    register("other", other_loss, module=OtherLoss)   # plain call

The decorator returns the decorated object unchanged.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from lfs.fit import identity as _identity

_REGISTRY: dict[str, "BaselineLoss"] = {}

# Parameters of a functional form that are data or plumbing, not hyper-parameters.
_NOT_DEFAULTS = ("cos", "target", "reduction")


@dataclass(frozen=True)
class BaselineLoss:
    """One registered baseline: its functional form, module form and documentation.

    ``defaults`` are the functional form's keyword defaults (``scale`` and the loss's
    hyper-parameters; ``reduction`` excluded) unless given explicitly at registration.
    """

    name: str
    fn: Callable[..., Any] | None
    module: type[nn.Module] | None
    defaults: dict = field(hash=False)
    description: str
    reference: str
    training: Callable[..., Any] | None = None
    transform: Callable[..., Any] | None = None

    def transforms(self, **kwargs) -> tuple[Callable, Callable]:
        """The loss in AM-LFS's unified form ``-log tau(p_y^t)`` (Eq. 4-6, 16): ``(t, tau)`` with
        hyper-parameters ``kwargs`` (default: the functional form's), identity where the loss
        does not change that part. Figure 1 fits the search space to these. ``ValueError`` for a
        loss without such a form."""
        if self.transform is None:
            raise ValueError(f"baseline loss {self.name!r} has no (t, tau) form")
        t, tau = self.transform(**kwargs)
        return (t or _identity), (tau or _identity)

    def training_loss(self, **kwargs) -> Callable[..., Any]:
        """The loss that trains one model, ``loss(cos, target, scale)``, with hyper-parameters
        ``kwargs``: the functional form with them bound, or, for a loss whose form changes during
        training (SphereFace's annealed lambda), a fresh stateful callable from ``training``."""
        if self.training is not None:
            return self.training(**kwargs)
        if self.fn is None:
            raise ValueError(f"baseline loss {self.name!r} has no functional form")
        unknown = sorted(set(kwargs) - set(self.defaults) - {"scale"})
        if unknown:
            raise ValueError(f"baseline loss {self.name!r} has no hyper-parameter {unknown[0]!r}; "
                             f"it has: {', '.join(k for k in self.defaults if k != 'scale') or 'none'}")
        fn = self.fn

        def loss(cos, target, scale):
            return fn(cos, target, scale=scale, **kwargs)

        return loss

    def create(self, in_features: int, num_classes: int, **kwargs) -> nn.Module:
        """An instance of the module form: ``module(in_features, num_classes, **kwargs)``."""
        if self.module is None:
            raise ValueError(f"baseline loss {self.name!r} has no module form")
        return self.module(in_features, num_classes, **kwargs)


def _signature_defaults(fn: Callable[..., Any] | None) -> dict:
    if fn is None:
        return {}
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty and p.name not in _NOT_DEFAULTS}


def _first_doc_paragraph(*objs) -> str:
    for obj in objs:
        doc = inspect.getdoc(obj) if obj is not None else None
        if doc:
            return " ".join(doc.strip().split("\n\n")[0].split())
    return ""


def register(name: str, obj=None, *, fn: Callable[..., Any] | None = None, module: type[nn.Module] | None = None,
             defaults: dict | None = None, description: str | None = None, reference: str = "",
             training: Callable[..., Any] | None = None, transform: Callable[..., Any] | None = None):
    """Decorator registering a baseline loss under ``name``; ``register(name, obj, ...)``
    registers ``obj`` at once (and returns it).

    Decorating a class (an ``nn.Module`` subclass) sets the module form, decorating anything else
    sets the functional form; the other form can be passed as ``fn=`` / ``module=``. ``training``:
    a factory of a stateful training loss (see :meth:`BaselineLoss.training_loss`); ``transform``:
    ``(**hyper-parameters) -> (t, tau)`` (None for an identity part), see :meth:`BaselineLoss.transforms`.
    ``description`` defaults to the first paragraph of the functional's (else the module's) docstring.
    Registering a name twice raises ``ValueError``, except for re-registering the same objects
    (e.g. when a loss file is reloaded), which replaces the entry.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a baseline loss name must be a non-empty string, got {name!r}")

    def decorator(obj):
        is_module = isinstance(obj, type) and issubclass(obj, nn.Module)
        the_fn = fn if is_module else obj
        the_module = obj if is_module else module
        if the_fn is not None and not callable(the_fn):
            raise TypeError(f"fn of baseline loss {name!r} must be callable, got {the_fn!r}")
        entry = BaselineLoss(
            name=name,
            fn=the_fn,
            module=the_module,
            defaults=dict(defaults) if defaults is not None else _signature_defaults(the_fn),
            description=description if description is not None else _first_doc_paragraph(the_fn, the_module),
            reference=reference,
            training=training,
            transform=transform,
        )
        old = _REGISTRY.get(name)
        if old is not None and not _same_objects(old, entry):
            raise ValueError(f"baseline loss {name!r} is already registered")
        _REGISTRY[name] = entry
        return obj

    return decorator if obj is None else decorator(obj)


def _qualname(obj) -> str | None:
    return None if obj is None else f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_objects(a: BaselineLoss, b: BaselineLoss) -> bool:
    return _qualname(a.fn) == _qualname(b.fn) and _qualname(a.module) == _qualname(b.module)


def get(name: str) -> BaselineLoss:
    """The registered entry ``name``; ``ValueError`` listing the available names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown baseline loss {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def create(name: str, in_features: int, num_classes: int, **kwargs) -> nn.Module:
    """The module form of ``name`` (timm's ``create_model``): ``get(name).create(...)``."""
    return get(name).create(in_features, num_classes, **kwargs)
