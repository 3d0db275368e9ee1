"""The shape of a JSON file we did not write ourselves (a report someone sent): checked once, at load.

A spec is a Python type (or tuple of types), ``None`` for "anything", a dict
``{key: spec}`` for an object (keys ending in ``?`` are optional), or a one-item list
``[spec]`` for a list of such items. ``check`` raises one UsageError naming the first field
that is missing or of the wrong type (``artifacts[2].parity.checks[0].threshold``), so no
later ``data["x"]`` ends in a traceback.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import UsageError

Number = (int, float)
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list", dict: "an object", type(None): "null"}


def _name(spec: Any) -> str:
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, list):
        return "a list"
    if isinstance(spec, tuple):
        names = list(dict.fromkeys(_NAMES.get(t, t.__name__) for t in spec if not (t is int and float in spec)))
        return " or ".join(names)
    return _NAMES.get(spec, getattr(spec, "__name__", str(spec)))


def _is(value: Any, spec: Any) -> bool:
    types = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is not a number here
    if isinstance(value, float) and not math.isfinite(value) and float in types:
        return True  # NaN/Inf in a metric are data (reports keep them), not a malformed file
    return isinstance(value, types)


def check(value: Any, spec: Any, where: str, origin: str) -> None:
    """Raise UsageError(origin: where must be ...) at the first mismatch of ``value`` with ``spec``."""
    if spec is None:
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise UsageError(f"{origin}: {where or 'the file'} must be an object, got {_kind(value)}")
        for key, sub in spec.items():
            optional = key.endswith("?")
            k = key.rstrip("?")
            if k not in value:
                if optional:
                    continue
                raise UsageError(f"{origin}: missing field '{_join(where, k)}'")
            if optional and value[k] is None:
                continue
            check(value[k], sub, _join(where, k), origin)
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise UsageError(f"{origin}: {where} must be a list, got {_kind(value)}")
        for i, item in enumerate(value):
            check(item, spec[0], f"{where}[{i}]", origin)
        return
    if not _is(value, spec):
        raise UsageError(f"{origin}: field '{where}' must be {_name(spec)}, got {_kind(value)}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{_name(type(value))} {text[:40]}{'…' if len(text) > 40 else ''}"
