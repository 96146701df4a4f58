"""The JSON Schema of a schedule, derived from the dataclasses' annotations.

``docs/schedule.schema.json`` is this function's output (a test keeps it current);
regenerate it with ``python -c "import coec.backend.schedule.schema as s; s.write()"``.
The schema states each object's keys and each value's type and range; the
cross-field rules (names that must exist, boxes inside their buffers) are
:func:`~coec.backend.schedule.model.check_schedule`'s alone.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from coec.backend.schedule.codec import Above, AtLeast
from coec.backend.schedule.model import FORMAT, Schedule

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schedule_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) every emitted schedule satisfies."""
    defs: dict[str, dict] = {}
    root = _schema(Schedule, defs)
    top = defs.pop(root["$ref"].rsplit("/", 1)[-1])
    return {
        "$schema": DIALECT,
        "$id": "https://coec.dev/schedule.schema.json",
        "title": FORMAT,
        **top,
        "$defs": dict(sorted(defs.items())),
    }


def _schema(tp, defs: dict[str, dict]) -> dict:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        out = dict(_schema(args[0], defs))
        for mark in args[1:]:
            if isinstance(mark, AtLeast):
                out["minimum"] = mark.bound
            elif isinstance(mark, Above):
                out["exclusiveMinimum"] = mark.bound
        return out
    if tp is Any:
        return {}
    if origin is Literal:
        return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(a, defs) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0], defs)}
        return {
            "type": "array",
            "prefixItems": [_schema(a, defs) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1], defs)}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder while the fields are read
            hints = typing.get_type_hints(tp, include_extras=True)
            fields = dataclasses.fields(tp)
            defs[name] = {
                "description": (tp.__doc__ or name).strip().splitlines()[0],
                "type": "object",
                "properties": {f.name: _schema(hints[f.name], defs) for f in fields},
                "required": [f.name for f in fields if not _has_default(f)],
                "additionalProperties": False,
            }
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def schema_text() -> str:
    """The schema as ``docs/schedule.schema.json`` holds it."""
    return json.dumps(schedule_json_schema(), indent=2) + "\n"


def write(path: str | Path = "docs/schedule.schema.json") -> None:
    """Write the schema file (from the repository root)."""
    Path(path).write_text(schema_text())
