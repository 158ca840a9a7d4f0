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


class JsonTooDeep(ValueError):
    """The JSON nests deeper than JSON_DEPTH_MAX."""


def parse_json(text: str | bytes | bytearray) -> Any:
    """Parse `text`; raise ValueError when it is not JSON and JsonTooDeep (a ValueError) when it nests deeper
    than :data:`JSON_DEPTH_MAX`."""
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
