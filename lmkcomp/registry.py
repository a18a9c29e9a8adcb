"""Registries of named parts: a config or a command line picks a pooling, a head, a verifier...
by name, and `create` builds it. An unknown name is a user error that lists the known ones.

A part may also be registered by import path ("package.module:Name"), imported only when it is
first asked for: that is how a library layer names parts that live in a package built on top of
it (the DELF extractors of `delf_baseline`) without importing that package.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from lmkcomp.errors import UserInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory for one kind of part (e.g. "pooling", "head")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        #: name -> "package.module:Name", resolved into `_factories` on first use
        self._paths: dict[str, str] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a class or function under `name`."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories or name in self._paths:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def register_path(self, name: str, path: str) -> None:
        """Register the factory at import path `path` ("package.module:Name") under `name`;
        the module is imported on the first `get` of `name`, not now."""
        module, _, attribute = path.partition(":")
        if not module or not attribute:
            raise ValueError(f"{self.kind} {name!r}: import path {path!r} is not 'package.module:Name'")
        if name in self._factories or name in self._paths:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._paths[name] = path

    def names(self) -> list[str]:
        return sorted([*self._factories, *self._paths])

    def __contains__(self, name: str) -> bool:
        return name in self._factories or name in self._paths

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as `name`, importing it first if it was registered by path."""
        if name in self._paths:
            module, _, attribute = self._paths[name].partition(":")
            self._factories[name] = getattr(importlib.import_module(module), attribute)
            del self._paths[name]
        try:
            return self._factories[name]
        except KeyError:
            raise UserInputError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs) -> T:
        """Build the part registered as `name` with keyword arguments."""
        return self.get(name)(**kwargs)
