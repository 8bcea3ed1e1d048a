"""A small name -> class registry (timm / fairseq style), shared by loss families and searchers.

``Registry("loss family", loader)``: ``@registry.register("name")`` on a class records it (and sets
``cls.name``); ``registry.names()``, ``registry.get(name)`` and ``registry.make(name, **kwargs)``
look it up, with one-line errors naming the valid names or the bad argument. ``loader`` imports
the package whose files register the built-in entries, on first use.
"""
from __future__ import annotations

from typing import Callable


class Registry:
    def __init__(self, kind: str, loader: Callable[[], None]):
        self.kind, self._loader, self._entries = kind, loader, {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: register the class under ``name``."""
        def deco(cls: type) -> type:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name].__name__})")
            cls.name = name
            self._entries[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        self._loader()
        return sorted(self._entries)

    def get(self, name: str) -> type:
        self._loader()
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}") from None

    def make(self, name: str, **kwargs):
        """An instance of the class registered as ``name``, built with ``kwargs``."""
        cls = self.get(name)
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ValueError(f"{self.kind} {name!r}: {e}") from None
