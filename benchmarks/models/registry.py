"""A timm-style model registry: ``@register_model(name)`` on builders, ``build_model(name, ...)``.

A builder has the signature ``fn(num_classes, normalize=..., s=..., **kw) -> EmbeddingClassifier``;
its own defaults for ``normalize`` and ``s`` are the model's defaults (the head of the paper the
model comes from), so ``build_model`` passes them on only when the caller gives them.
"""
from __future__ import annotations

from typing import Callable

from .base import EmbeddingClassifier

_MODELS: dict[str, Callable[..., EmbeddingClassifier]] = {}


def register_model(name: str) -> Callable[[Callable[..., EmbeddingClassifier]], Callable[..., EmbeddingClassifier]]:
    """Decorator registering a builder under ``name`` (names are unique)."""

    def deco(fn: Callable[..., EmbeddingClassifier]) -> Callable[..., EmbeddingClassifier]:
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__module__}.{_MODELS[name].__name__})")
        _MODELS[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def get_model_builder(name: str) -> Callable[..., EmbeddingClassifier]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None


def build_model(name: str, num_classes: int, **kwargs) -> EmbeddingClassifier:
    """Build the registered model ``name`` with a ``num_classes``-way head.

    ``kwargs`` go to the builder (``normalize``, ``s`` and the model's own options).
    """
    return get_model_builder(name)(int(num_classes), **kwargs)
