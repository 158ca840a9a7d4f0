"""JSON that comes from outside (no Qt): DICOMweb search answers, Orthanc's REST answers, settings and cluster
profile files.  One parser with one nesting limit, so that a hostile or broken answer is a sentence, not a
RecursionError deep in the json module or in the code that walks the result, and one bound on how many values
it may hold.  Sizes are bounded where the bytes are read.  The limits are :mod:`viewer.limits`'.
"""

from __future__ import annotations

import json
from typing import Any

from viewer.limits import JSON_DEPTH_MAX, JSON_VALUES_MAX


class JsonRefused(ValueError):
    """JSON we do not parse: too deep or too many values (a hostile or broken answer)."""


class JsonTooDeep(JsonRefused):
    """The JSON nests deeper than JSON_DEPTH_MAX."""


class JsonTooLarge(JsonRefused):
    """The JSON holds more than JSON_VALUES_MAX values."""


def _values_at_most(text: str | bytes | bytearray) -> int:
    """An upper bound of the values in `text`: every value but the first follows a comma or opens a container."""
    if isinstance(text, str):
        return text.count(",") + text.count("{") + text.count("[") + 1
    return text.count(b",") + text.count(b"{") + text.count(b"[") + 1


def parse_json(text: str | bytes | bytearray) -> Any:
    """Parse `text`; raise ValueError when it is not JSON, JsonTooLarge (a JsonRefused, a ValueError) when it may
    hold more than :data:`JSON_VALUES_MAX` values, and JsonTooDeep when it nests deeper than
    :data:`JSON_DEPTH_MAX`."""
    if _values_at_most(text) > JSON_VALUES_MAX:
        raise JsonTooLarge(f"it holds more than {JSON_VALUES_MAX:,} values")
    try:
        value = json.loads(text)
    except RecursionError:  # the C parser's own limit (the interpreter's recursion limit, ~1000)
        raise JsonTooDeep(f"it nests deeper than {JSON_DEPTH_MAX} levels") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: the walk itself must not recurse
        node, depth = stack.pop()
        if depth > JSON_DEPTH_MAX:
            raise JsonTooDeep(f"it nests deeper than {JSON_DEPTH_MAX} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return value
