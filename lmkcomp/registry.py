"""Registries of named parts: a config or a command line picks a pooling, a head, a verifier...
by name, and `create` builds it. An unknown name is a user error that lists the known ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from lmkcomp.errors import UserInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory for one kind of part (e.g. "pooling", "head")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a class or function under `name`."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise UserInputError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs) -> T:
        """Build the part registered as `name` with keyword arguments."""
        return self.get(name)(**kwargs)
