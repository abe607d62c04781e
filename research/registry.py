"""Name -> object registries, the project's only dispatch mechanism.

Every choice with more than two options is a registered name. `Registry.get` also accepts an import path
(`my_pkg.my_module:MyConfig`) so that a scheme living outside this package can be named in an experiment.
Unknown names fail with the sorted list of valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of objects of one kind (positional configs, tokenizers, corpora, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("rope")` above a class or function."""

        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._items[name]!r}")
            self._items[name] = obj
            try:
                obj.registered_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def get(self, name: str, *, field: str | None = None) -> T:
        """The object registered as `name`, or imported from `package.module:Attr`."""
        if not isinstance(name, str):
            raise RegistryError(f"{field or self.kind}: expected a name (str), got {name!r}")
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module_name, _, attr = name.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise RegistryError(f"{field or self.kind}: cannot import {module_name!r} ({e})") from e
            try:
                return getattr(module, attr)
            except AttributeError as e:
                raise RegistryError(f"{field or self.kind}: module {module_name!r} has no {attr!r}") from e
        raise RegistryError(
            f"{field or self.kind}: unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            " (or an import path 'package.module:Name')"
        )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
