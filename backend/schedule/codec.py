"""JSON <-> frozen dataclasses, driven by the field annotations alone.

One reader per annotation, built once and cached: ``int``, ``float`` (finite; an
integer stays an integer, so a round trip writes the same text), ``str``, ``bool``,
``Literal[...]`` (one of the values), ``X | None``, ``tuple[T, ...]`` and
``tuple[A, B]`` (JSON lists), ``dict[str, T]`` (JSON objects), ``Any`` (taken as it
is), nested dataclasses (exact key sets), and ``Annotated[T, AtLeast(n)]`` /
``Annotated[T, Above(n)]`` for the values a number may take. The JSON Schema
(``schema.py``) reads the same annotations, so the two cannot drift apart.

A bad value raises :class:`Invalid` with the path of the field (``buffer x.offset``);
the caller adds the file name and turns it into a ``ScheduleFormatError``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

#: field metadata: leave the key out of the JSON when the value is None
OMIT_NONE = "omit_none"
#: field metadata: how to name an item of this list / object in messages,
#: ``label(key_or_index, raw_item) -> str`` (``buffer x`` rather than ``buffers.x``)
LABEL = "label"


@dataclass(frozen=True)
class AtLeast:
    """The number is ``>= bound``."""

    bound: int | float

    def check(self, value, where: str) -> None:
        if value < self.bound:
            raise Invalid(where, f"must be >= {self.bound}, got {value!r}")


@dataclass(frozen=True)
class Above:
    """The number is ``> bound``."""

    bound: int | float

    def check(self, value, where: str) -> None:
        if not value > self.bound:
            raise Invalid(where, f"must be > {self.bound}, got {value!r}")


class Invalid(Exception):
    """A value that does not fit its field; ``where`` is the field's path."""

    def __init__(self, where: str, msg: str):
        super().__init__(f"{where}: {msg}")
        self.where, self.msg = where or "schedule", msg


def at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _show(value) -> str:
    return f"{value!r:.60}"


def describe(tp) -> str:
    """An annotation in words, for messages."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return describe(args[0])
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is tuple or tp is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "null" if tp is type(None) else str(tp)
    )


Reader = Callable[[Any, str], Any]
Label = Callable[[Any, Any], str]


def read(tp, value, where: str = ""):
    """``value`` (parsed JSON) as an instance of annotation ``tp``; Invalid otherwise."""
    return reader(tp)(value, where)


@cache
def reader(tp, label: Label | None = None) -> Reader:
    """The function that reads JSON into annotation ``tp`` (made once per annotation)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _annotated(reader(args[0], label), args[1:])
    if tp is Any:
        return lambda v, where: v
    if origin is Literal:
        return _literal(args)
    if origin in (Union, types.UnionType):
        return _union(tp, args)
    if tp in (int, float, str, bool):
        return _scalar(tp)
    if origin is tuple:
        return _tuple(args, label)
    if origin is dict:
        return _dict(reader(args[1]), label)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp)
    raise TypeError(f"no JSON reader for {tp!r}")


def _annotated(base: Reader, marks) -> Reader:
    def read_annotated(v, where):
        v = base(v, where)
        for mark in marks:
            mark.check(v, where)
        return v

    return read_annotated


def _literal(choices: tuple) -> Reader:
    def read_literal(v, where):
        if isinstance(v, str | int | float) and not isinstance(v, bool) and v in choices:
            return v
        raise Invalid(where, f"{_show(v)} is not one of {', '.join(map(repr, choices))}")

    return read_literal


def _union(tp, args: tuple) -> Reader:
    nullable = type(None) in args
    readers = [reader(a) for a in args if a is not type(None)]

    def read_union(v, where):
        if v is None and nullable:
            return None
        if len(readers) == 1:
            return readers[0](v, where)
        for r in readers:
            try:
                return r(v, where)
            except Invalid:
                continue
        raise Invalid(where, f"expected {describe(tp)}, got {_show(v)}")

    return read_union


def _scalar(tp: type) -> Reader:
    kinds = (int, float) if tp is float else tp

    def read_scalar(v, where):
        if not isinstance(v, kinds) or (isinstance(v, bool) and tp is not bool):
            raise Invalid(where, f"expected {describe(tp)}, got {_show(v)}")
        if tp is float and not math.isfinite(v):
            raise Invalid(where, f"must be a finite number, got {v!r}")
        return v

    return read_scalar


def _tuple(args: tuple, label: Label | None) -> Reader:
    name = label or (lambda i, item: None)
    if len(args) == 2 and args[1] is Ellipsis:
        item = reader(args[0])

        def read_list(v, where):
            if not isinstance(v, list):
                raise Invalid(where, f"expected a list, got {_show(v)}")
            return tuple(item(x, name(i, x) or f"{where}[{i}]") for i, x in enumerate(v))

        return read_list
    items = [reader(a) for a in args]

    def read_fixed(v, where):
        if not isinstance(v, list) or len(v) != len(items):
            raise Invalid(where, f"expected a list of {len(items)}, got {_show(v)}")
        return tuple(r(x, f"{where}[{i}]") for i, (r, x) in enumerate(zip(items, v, strict=True)))

    return read_fixed


def _dict(item: Reader, label: Label | None) -> Reader:
    name = label or (lambda key, value: None)

    def read_dict(v, where):
        if not isinstance(v, dict):
            raise Invalid(where, f"expected an object, got {_show(v)}")
        return {k: item(x, name(k, x) or at(where, k)) for k, x in v.items()}

    return read_dict


def _dataclass(cls) -> Reader:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [
        (f.name, reader(hints[f.name], f.metadata.get(LABEL)), _has_default(f))
        for f in dataclasses.fields(cls)
    ]
    known = {name for name, _, _ in fields}

    def read_object(v, where):
        if not isinstance(v, dict):
            raise Invalid(where, f"expected an object, got {_show(v)}")
        unknown = [k for k in v if k not in known]
        if unknown:
            raise Invalid(where, f"unknown key '{unknown[0]}'")
        kwargs = {}
        for name, r, optional in fields:
            if name in v:
                kwargs[name] = r(v[name], at(where, name))
            elif not optional:
                raise Invalid(where, f"missing key '{name}'")
        return cls(**kwargs)

    return read_object


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def write(value):
    """A dataclass (or anything it holds) as plain JSON data, keys in field order."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in _fields(type(value)):
            v = getattr(value, f.name)
            if v is None and f.metadata.get(OMIT_NONE):
                continue
            out[f.name] = write(v)
        return out
    if isinstance(value, tuple | list):
        return [write(v) for v in value]
    if isinstance(value, dict):
        return {k: write(v) for k, v in value.items()}
    return value


@cache
def _fields(cls) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)
