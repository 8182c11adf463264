"""One registry type for every extension point (models, neurons, surrogates, attacks, ...).

A :class:`Registry` maps names to entries (a class, a function or any object), each with a
one-line description taken from the first sentence of its docstring unless given, and
optional alias names. The same rules hold everywhere:

* a name or alias registered twice raises :class:`ValueError` naming both places;
* an unknown name raises a one-line :class:`~spikeguard.errors.SpikeguardError` listing the
  known names (the CLI prints it without a traceback);
* listings (:meth:`Registry.names`, :meth:`Registry.items`, :meth:`Registry.describe`) are sorted.

Usage::

    MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

    @MODELS.register("small_conv", aliases=("sc",))
    def small_conv(...): ...

    MODELS.get("sc")          # -> small_conv
    MODELS.describe()         # [("small_conv", "first sentence of its docstring")]
"""

from __future__ import annotations

import contextlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError, SpikeguardError

T = TypeVar("T")
E = TypeVar("E")

__all__ = ["Registry", "RegistryEntry", "UnknownNameError", "first_sentence", "summary"]


class UnknownNameError(ConfigError, ValueError):
    """A name no registry entry has (also a ``ValueError``, which callers caught before)."""


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence (a '.', '!' or '?' before a space or the end)."""
    m = re.search(r"[.!?](?=\s|$)", text)
    return text[: m.end()] if m else text


def summary(obj: object) -> str:
    """First sentence of ``obj``'s docstring (empty if none), its first paragraph joined into one line."""
    doc = (inspect.getdoc(obj) or "").strip()
    para = " ".join(ln.strip() for ln in doc.split("\n\n")[0].splitlines())
    return first_sentence(para.replace("``", ""))


def _origin(obj: object) -> str:
    """Where ``obj`` was defined (``module.qualname``), for the duplicate-name message."""
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(obj))}"


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """One registered thing: its name, the object, a one-line description, aliases and metadata."""

    name: str
    obj: T
    description: str
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> entry map of one extension point (see the module docstring for the rules).

    Args:
        kind: what the entries are, singular (``"model"``), used in messages.
        normalize: maps a user-given name to its lookup key (default: strip + lower case).
        error: exception type of unknown-name errors (a :class:`SpikeguardError` subclass).
    """

    def __init__(
        self,
        kind: str,
        *,
        normalize: Callable[[str], str] | None = None,
        error: type[SpikeguardError] = UnknownNameError,
    ) -> None:
        self.kind = kind
        self._normalize = normalize or (lambda s: str(s).strip().lower())
        self._error = error
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._aliases: dict[str, str] = {}

    # -- registering ---------------------------------------------------------------------------
    def add(
        self,
        name: str,
        obj: T,
        *,
        aliases: tuple[str, ...] | list[str] = (),
        description: str | None = None,
        **meta: Any,
    ) -> T:
        """Register ``obj`` as ``name`` (see :meth:`register`); returns ``obj``.

        Raises:
            ValueError: ``name`` or an alias is already a registered name or alias.
        """
        for key in (name, *aliases):
            owner = self._owner(key)
            if owner is not None:
                raise ValueError(
                    f"{self.kind} {key!r} is registered twice: by {_origin(owner.obj)} and by {_origin(obj)}"
                )
        if len(set((name, *aliases))) != 1 + len(aliases):
            raise ValueError(f"{self.kind} {name!r}: a name or alias is repeated in {(name, *aliases)}")
        desc = summary(obj) if description is None else description
        self._entries[name] = RegistryEntry(name, obj, desc, tuple(aliases), dict(meta))
        self._aliases.update({a: name for a in aliases})
        return obj

    def register(
        self, name: str, *, aliases: tuple[str, ...] | list[str] = (), description: str | None = None, **meta: Any
    ) -> Callable[[E], E]:
        """Decorator: register the decorated class or function as ``name``.

        Args:
            name: canonical name.
            aliases: other names that :meth:`get` accepts.
            description: one line for listings (default: the first sentence of the docstring).
            **meta: extra facts about the entry, read back with :meth:`entry` (``.meta``).
        """

        def deco(obj: E) -> E:
            self.add(name, obj, aliases=aliases, description=description, **meta)  # type: ignore[arg-type]
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (tests that register something clean up with this)."""
        entry = self._entries.pop(self.canonical(name))
        for a in entry.aliases:
            self._aliases.pop(a, None)

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T, **kw: Any) -> Iterator[T]:
        """Register ``obj`` as ``name`` for the ``with`` block only."""
        self.add(name, obj, **kw)
        try:
            yield obj
        finally:
            self.unregister(name)

    def copy(self) -> Registry[T]:
        """A registry with the same entries (registering into the copy leaves this one alone)."""
        new: Registry[T] = Registry(self.kind, normalize=self._normalize, error=self._error)
        new._entries, new._aliases = dict(self._entries), dict(self._aliases)
        return new

    # -- looking up ----------------------------------------------------------------------------
    def _owner(self, key: str) -> RegistryEntry[T] | None:
        if key in self._entries:
            return self._entries[key]
        target = self._aliases.get(key)
        return self._entries[target] if target is not None else None

    def find(self, name: str) -> str | None:
        """The canonical name of ``name`` (a name or alias, as given or normalised), or None."""
        for key in (name, self._normalize(name)):
            if key in self._entries:
                return key
            if key in self._aliases:
                return self._aliases[key]
        return None

    def canonical(self, name: str) -> str:
        """The canonical name of ``name``.

        Raises:
            SpikeguardError: (or the registry's error type) unknown name, one line listing the known names.
        """
        key = self.find(name)
        if key is None:
            raise self._error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        return key

    def entry(self, name: str) -> RegistryEntry[T]:
        """The :class:`RegistryEntry` of ``name`` (or an alias)."""
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or an alias); unknown names raise (see :meth:`canonical`)."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """The canonical names, sorted."""
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        """``alias -> canonical name`` for every alias."""
        return dict(self._aliases)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs, sorted by name."""
        return [(n, self._entries[n].obj) for n in self.names()]

    def entries(self) -> list[RegistryEntry[T]]:
        """Every :class:`RegistryEntry`, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def describe(self) -> list[tuple[str, str]]:
        """``(name, one-line description)`` pairs, sorted by name."""
        return [(e.name, e.description) for e in self.entries()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
