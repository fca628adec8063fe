"""One Registry per slot: modules register by name with a decorator, builders look them up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pretrainkit.errors import ConfigError, closest

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors for one slot (embedding, encoder, target, ...)."""

    def __init__(self, slot: str):
        self.slot = slot
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.slot} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.slot} {name!r}{closest(name, self._entries)}; "
                f"valid choices: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
