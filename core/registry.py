"""One generic registry for every plugin kind (methods, tasks).

Entries are registered with a decorator, looked up with did-you-mean suggestions,
and third-party entries arrive through a Python entry-point group, so installing a
plugin distribution makes it appear with no change to slimbench.
"""
from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the valid choices."""

    def __init__(self, kind: str, name: str, choices: list[str], reason: str | None = None):
        self.kind, self.name, self.choices = kind, name, choices
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        why = f" ({reason})" if reason else ""
        msg = f"unknown {kind} {name!r}{why}.{hint} Valid choices: {', '.join(sorted(choices)) or '(none)'}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class Registry(Generic[T]):
    """Name -> object map with decorator registration and lazy entry-point plugins.

    Args:
        kind: what the entries are, for error messages ("method", "task").
        group: entry-point group scanned once, on first lookup.
        builtins: modules imported on first lookup so built-in entries register themselves, or a
            callable returning their names (found on first lookup, e.g. every family folder).
        on_register: called as `on_register(name, obj)` before an entry is added (validation,
            naming); it may raise to refuse the entry.
    """

    def __init__(self, kind: str, group: str | None = None,
                 builtins: tuple[str, ...] | Callable[[], Iterable[str]] = (),
                 on_register: Callable[[str, T], None] | None = None):
        self.on_register = on_register
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False
        self.plugin_errors: dict[str, str] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name")
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice "
                                 f"({self._origin[key]} and {_origin_of(obj)})")
            if self.on_register is not None:
                self.on_register(key, obj)
            self._entries[key] = obj
            self._origin[key] = _origin_of(obj)
            return obj
        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import importlib
        for mod in self.builtins() if callable(self.builtins) else self.builtins:
            importlib.import_module(mod)
        if self.group:
            for ep in entry_points(group=self.group):
                if ep.name in self._entries:
                    self.plugin_errors[ep.name] = (f"ignored: the name is already taken by "
                                                   f"{self._origin[ep.name]} (plugin {ep.value})")
                    continue
                try:
                    self.register(ep.name)(ep.load())
                except Exception as exc:  # a broken plugin must not break the suite
                    self.plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            if name in self.plugin_errors:
                raise UnknownNameError(self.kind, name, list(self._entries),
                                       f"the plugin {name!r} is installed but failed to load: {self.plugin_errors[name]}")
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        self._load()
        return self._origin[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _origin_of(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
