"""One registry mechanism for everything a setting can add: data sources, model backends, feature
extractors and properties (and the use cases that bring them).

A :class:`Registry` maps a name to an object or to a ``"module:attribute"`` string that is imported on first
use, so a registry can name torch code without importing torch. Every lookup of an unknown name fails with
one line listing the valid names.

>>> squares = Registry("square")
>>> squares.add("two", lambda: 4)
>>> squares.get("two")()
4
>>> squares.get("three")
Traceback (most recent call last):
...
ValueError: square 'three' is not registered; valid: ['two']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "load_target"]

T = TypeVar("T")


def load_target(target: str) -> Any:
    """The object named by ``"module:attribute"`` (the module is imported)."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{target!r} is not of the form 'module:attribute'")
    return getattr(importlib.import_module(module_name), attribute)


class Registry(Generic[T]):
    """Names -> objects of one kind (``what`` names the kind in errors, e.g. ``"data source"``).

    Entries are objects, or ``"module:attribute"`` strings resolved (and kept) on first :meth:`get`.
    Adding a name twice with another target is an error: a setting never silently replaces another's entry.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T | str] = {}

    def add(self, name: str, target: T | str) -> None:
        """Register ``target`` (an object, or a lazy ``"module:attribute"``) under ``name``."""
        current = self._entries.get(name)
        if current is not None and current is not target and current != target:
            raise ValueError(f"{self.what} {name!r} is registered twice ({current!r} and {target!r})")
        self._entries[name] = target

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@registry.register("name")``."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported on first use)."""
        if name not in self._entries:
            raise ValueError(f"{self.what} {name!r} is not registered; valid: {self.names()}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = load_target(entry)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
