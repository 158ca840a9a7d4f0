"""A dataset as rows for the tag browser: bounded, flat, and never raising on a bad value.

Sequences (PS3.5 7.5) are flattened: the sequence element's row is followed by one row per item (tag
``(FFFE,E000)``, PS3.5 7.5.2) and the item's elements one level deeper.  Traversal is iterative, so a
hostile nesting depth cannot exhaust the stack; ``depth_max``, ``rows_max`` and ``value_chars_max`` bound the
output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

ITEM_TAG = "(FFFE,E000)"
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_MULTI_VALUES_SHOWN_MAX = 64  # values of a multi-valued element shown before "..."


@dataclass(frozen=True)
class TagRow:
    depth: int
    tag: str  # "(0010,0010)"
    keyword: str
    vr: str
    value: str


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _clip(text: str, chars_max: int) -> str:
    text = text.replace("\r", " ").replace("\n", " ").replace("\x00", "")
    return text if len(text) <= chars_max else text[: max(chars_max - 1, 0)] + "…"


def _value_text(elem: DataElement, chars_max: int) -> str:
    value = elem.value
    if value is None:
        return ""
    if elem.VR in _BINARY_VRS or isinstance(value, (bytes, bytearray)):
        size = len(value) if isinstance(value, (bytes, bytearray)) else elem.length
        what = "pixel data" if elem.tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) else "binary data"
        return f"<{size} bytes of {what}>"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        parts: list[str] = []
        length = 0
        for k, v in enumerate(value):
            if k >= _MULTI_VALUES_SHOWN_MAX or length > chars_max:
                parts.append("…")
                break
            text = str(v)
            parts.append(text)
            length += len(text) + 1
        return _clip("\\".join(parts), chars_max)
    return _clip(str(value), chars_max)


def _element(ds: Dataset, tag: int) -> tuple[DataElement | None, str, str]:
    """(element or None, keyword, vr) for a tag; the element is None when its value cannot be converted."""
    raw = ds.get_item(tag)
    keyword = keyword_for_tag(tag) or ""
    vr = str(getattr(raw, "VR", "") or "")
    if isinstance(raw, RawDataElement) and raw.value is None and raw.length and raw.length != 0xFFFFFFFF \
            and vr != "SQ":
        # A deferred (large) value: show its size without reading it from disk.
        return None, keyword, vr
    try:
        elem = ds[tag]
    except Exception:
        return None, keyword, vr
    name = elem.keyword or (elem.name if elem.is_private else "") or keyword
    return elem, name, str(elem.VR or vr)


def _rows(ds: Dataset, depth_max: int, value_chars_max: int) -> Iterator[TagRow]:
    # Each stack entry is an iterator of rows still to produce; sequences push their items' iterators.
    stack: list[Iterator[TagRow]] = [_dataset_rows(ds, 0, depth_max, value_chars_max)]
    while stack:
        try:
            row = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if isinstance(row, _Descend):
            stack.append(row.rows)
        else:
            yield row


class _Descend:
    """Not a row: tells :func:`_rows` to produce ``rows`` next (keeps the traversal iterative)."""

    def __init__(self, rows: Iterator[TagRow]) -> None:
        self.rows = rows


def _dataset_rows(ds: Dataset, depth: int, depth_max: int, chars_max: int) -> Iterator:
    try:
        tags = sorted(ds.keys())
    except Exception:
        yield TagRow(depth, "", "", "", "<unreadable data set>")
        return
    for tag in tags:
        tag = Tag(tag)
        try:
            elem, keyword, vr = _element(ds, tag)
        except Exception:
            yield TagRow(depth, _tag_text(tag), "", "", "<unreadable>")
            continue
        if elem is None:
            raw = ds.get_item(tag)
            length = getattr(raw, "length", 0) or 0
            yield TagRow(depth, _tag_text(tag), keyword, vr, f"<{length} bytes, not shown>")
            continue
        if vr != "SQ":
            try:
                text = _value_text(elem, chars_max)
            except Exception:
                text = "<unreadable value>"
            yield TagRow(depth, _tag_text(tag), keyword, vr, text)
            continue
        items = elem.value or []
        yield TagRow(depth, _tag_text(tag), keyword, "SQ", f"{len(items)} item(s)")
        if depth + 1 > depth_max:
            yield TagRow(depth + 1, "", "", "", "(nested too deeply to show)")
            continue
        yield _Descend(_items_rows(items, depth + 1, depth_max, chars_max))


def _items_rows(items: list, depth: int, depth_max: int, chars_max: int) -> Iterator:
    for number, item in enumerate(items, start=1):
        yield TagRow(depth, ITEM_TAG, "Item", "", f"Item {number}")
        if depth + 1 > depth_max:
            yield TagRow(depth + 1, "", "", "", "(nested too deeply to show)")
            continue
        if isinstance(item, Dataset):
            yield _Descend(_dataset_rows(item, depth + 1, depth_max, chars_max))


def tag_rows(ds: Dataset, *, depth_max: int = 8, rows_max: int = 20000,
             value_chars_max: int = 200) -> list[TagRow]:
    """Rows for every element of ``ds`` (File Meta first when present), at most ``rows_max`` of them (the
    last row then says that more were left out).  Never raises on bad values."""
    rows: list[TagRow] = []
    if rows_max <= 0:
        return rows
    sources: list[Dataset] = []
    meta = getattr(ds, "file_meta", None)
    if isinstance(meta, Dataset) and len(meta):
        sources.append(meta)
    sources.append(ds)
    for source in sources:
        for row in _rows(source, depth_max, value_chars_max):
            if len(rows) == rows_max:
                rows[-1] = TagRow(0, "", "", "", "(more elements not shown)")
                return rows
            rows.append(row)
    return rows
