"""JSON that comes from outside (no Qt): DICOMweb search answers, Orthanc's REST answers, settings and cluster
profile files.  One parser with one nesting limit, so that a hostile or broken answer is a sentence, not a
RecursionError deep in the json module or in the code that walks the result.  Sizes are bounded where the
bytes are read (``viewer.pacs.dicomweb.QIDO_BYTES_MAX``, the settings and profile readers).
"""

from __future__ import annotations

import json
from typing import Any

# DICOM JSON (PS3.18 F.2) nests two levels per sequence (the element's Value list, then the item); a search
# answer is a list of objects of elements.  64 levels hold some 30 nested sequences, far beyond real data.
JSON_DEPTH_MAX = 64
# Values (objects, arrays, strings, numbers) in one document, counted before it is parsed: each costs 50-100 bytes
# parsed, so a few bytes of text each ("{}," is three) could grow 64 MiB into gigabytes.  A search answer of 10,000
# matches holds some 600,000; four million parse to 400 MiB at most.
JSON_VALUES_MAX = 4_000_000


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
