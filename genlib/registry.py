"""One small registry used for dataset sources, model families, extractors and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object map that validates on entry and teaches on a miss.

    ``kind`` names what is registered ("dataset source", "model family") so that errors read
    naturally; ``check`` validates each object as it is registered.
    """

    def __init__(self, kind: str, check: Callable[[T], None] | None = None):
        self.kind = kind
        self._check = check
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not name or name != name.strip().lower():
            raise ValueError(f"{self.kind} names are lower-case without spaces, got {name!r}")

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self._check is not None:
                self._check(obj)
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
