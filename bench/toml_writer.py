"""A small TOML writer (the standard library reads TOML but does not write it).

``dumps(data)`` writes a dict whose values are strings, integers, floats, booleans, lists
and dicts. Top-level dicts become ``[tables]`` and top-level lists of dicts become
``[[arrays of tables]]``; anything nested deeper is written inline (``{ a = 1 }``), which
TOML reads back identically. ``tomllib.loads(dumps(data)) == data`` for every such dict.
"""

from __future__ import annotations

import json
import math
import re

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    # A JSON string is a TOML basic string, once DEL (which JSON leaves raw) is escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"TOML cannot hold a {type(value).__name__}: {value!r}")


def _is_table_array(value: object) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, dict) for item in value)


def _body(table: dict) -> list[str]:
    return [f"{_key(k)} = {_value(v)}" for k, v in table.items()]


def dumps(data: dict) -> str:
    """``data`` as a TOML document."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    lines = _body(scalars)
    for name, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{_key(name)}]", *_body(value)]
        elif _is_table_array(value):
            for table in value:
                lines += ["", f"[[{_key(name)}]]", *_body(table)]
    return "\n".join(lines).lstrip("\n") + "\n"
