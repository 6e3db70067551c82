"""Declared shapes of JSON data: every field's type and range written once, as a table, and checked in one pass.

A file anyone can write (a model file's metadata: its checksum is no more than an integrity check) is checked
against its declaration before anything is built from it. A value of the wrong type or out of range is then
refused in one line that names where it is (``dataset.std[1] must be a number from 1e-06 to 1``) instead of
failing, with a traceback, wherever it happens to be used first. The declarations are plain data: ``walk``
lists every field, so a test throws wrong values at each one and a field added later is covered too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from engine.core.errors import InputError

EACH = "*"  # in a path from ``walk``: each item of a list, each entry of a mapping


class SchemaError(InputError):
    """A value that does not fit its declaration; the message names its path."""


@dataclass(frozen=True)
class Leaf:
    """A value with no fields: text, a whole number, a number, a flag or one of a few choices."""

    kind: str
    low: float = 0  # a number's lowest value
    high: float = 0  # a number's highest value; text's most characters
    below: bool = False  # the number stays below ``high``
    options: tuple = ()

    @property
    def what(self) -> str:
        if self.kind == "text":
            return f"text of at most {self.high:,} printable characters"
        if self.kind == "whole":
            return f"a whole number from {self.low:,} to {self.high:,}"
        if self.kind == "number":
            return f"a number from {self.low:g} to {'below ' if self.below else ''}{self.high:g}"
        return "true or false" if self.kind == "flag" else f"one of {', '.join(map(str, self.options))}"

    def fits(self, value) -> bool:
        if self.kind == "text":
            return isinstance(value, str) and len(value) <= self.high and value.isprintable()
        if self.kind == "whole":
            return type(value) is int and self.low <= value <= self.high
        if self.kind == "number":  # an infinity only where a bound is one; never NaN
            inside = type(value) in (int, float) and self.low <= value <= self.high
            return inside and not (self.below and value == self.high)
        if self.kind == "flag":
            return type(value) is bool
        return any(type(value) is type(option) and value == option for option in self.options)

    def fields(self, value, path: tuple) -> Iterator[tuple]:
        return iter(())


def text(most: int) -> Leaf:
    """Printable text (no control characters, no lone surrogates) of at most ``most`` characters."""
    return Leaf("text", high=most)


def whole(low: int, high: int) -> Leaf:
    return Leaf("whole", low, high)


def number(low: float, high: float, *, below: bool = False) -> Leaf:
    """A number from ``low`` to ``high`` (below it with ``below``), an integer or a float; infinite only where
    a bound is infinite."""
    return Leaf("number", low, high, below)


def flag() -> Leaf:
    return Leaf("flag")


def choice(options) -> Leaf:
    """One of ``options``, of the same type too (``8``, not ``8.0`` or ``True``)."""
    return Leaf("choice", options=tuple(options))


@dataclass(frozen=True)
class Maybe:
    """A field that may be absent or empty (``null``)."""

    of: object


def maybe(of) -> Maybe:
    return Maybe(of)


@dataclass(frozen=True)
class Obj:
    """An object with exactly the declared fields (those in a ``Maybe`` may be left out); any other is refused."""

    declared: tuple[tuple[str, object], ...]
    what = "an object"

    def fits(self, value) -> bool:
        return isinstance(value, dict)

    def fields(self, value, path: tuple) -> Iterator[tuple]:
        known = dict(self.declared)
        for key in value:
            if key not in known:
                raise SchemaError(f"{show((*path, key))} is not a field of this format")
        for key, of in self.declared:
            if key in value:
                yield (*path, key), of, value[key]
            elif not isinstance(of, Maybe):
                raise SchemaError(f"missing {show((*path, key))}")


def obj(**declared) -> Obj:
    return Obj(tuple(declared.items()))


@dataclass(frozen=True)
class Items:
    """A list of ``low`` to ``high`` items, each ``of``."""

    of: object
    low: int
    high: int

    @property
    def what(self) -> str:
        count = f"{self.low:,}" if self.low == self.high else f"{self.low:,} to {self.high:,}"
        return f"a list of {count} items"

    def fits(self, value) -> bool:
        return isinstance(value, list) and self.low <= len(value) <= self.high

    def fields(self, value, path: tuple) -> Iterator[tuple]:
        return (((*path, i), self.of, item) for i, item in enumerate(value))


def items(of, low: int, high: int) -> Items:
    return Items(of, low, high)


@dataclass(frozen=True)
class Entries:
    """An object used as a mapping: at most ``high`` entries, each key a name, each value ``of``."""

    of: object
    high: int
    key = text(100)

    @property
    def what(self) -> str:
        return f"an object of at most {self.high:,} entries"

    def fits(self, value) -> bool:
        return isinstance(value, dict) and len(value) <= self.high

    def fields(self, value, path: tuple) -> Iterator[tuple]:
        for key, item in value.items():
            if not self.key.fits(key):
                raise SchemaError(f"{show(path)} has a key that is not {self.key.what}")
            yield (*path, key), self.of, item


def entries(of, high: int) -> Entries:
    return Entries(of, high)


def check(declared, value, path: tuple = ()) -> None:
    """``SchemaError`` naming the first field of ``value`` that does not fit ``declared``."""
    if isinstance(declared, Maybe):
        if value is None:
            return
        declared, empty = declared.of, "empty or "
    else:
        empty = ""
    if not declared.fits(value):
        raise SchemaError(f"{show(path)} must be {empty}{declared.what}")
    for field, of, item in declared.fields(value, path):
        check(of, item, field)


def walk(declared, path: tuple = ()) -> Iterator[tuple[tuple, object]]:
    """Every declared field, ``(path, declaration)``, containers first; ``EACH`` stands for any item or entry."""
    yield path, declared
    inner = declared.of if isinstance(declared, Maybe) else declared
    if isinstance(inner, Obj):
        for key, of in inner.declared:
            yield from walk(of, (*path, key))
    elif isinstance(inner, (Items, Entries)):
        yield from walk(inner.of, (*path, EACH))


def show(path: tuple) -> str:
    """A path as written in messages: ``dataset.std[1]``, ``profile.macros.cifar10.channels``; a key that is not
    a plain name is quoted (so a message stays on one line)."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        elif re.fullmatch(r"\w{1,100}", key):
            out += f".{key}"
        else:
            out += f"[{key[:100]!r}]"
    return out.removeprefix(".") or "the value"
