"""The tag browser's rows: flattened, bounded, never raising."""

from __future__ import annotations

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from viewer.dicom.tags import ITEM_TAG, TagRow, tag_rows

from .conftest import image_dataset


def test_rows_show_tag_keyword_vr_and_value_with_file_meta_first():
    ds = image_dataset(np.zeros((2, 2), np.uint16), PatientName="Doe^Jane")
    rows = tag_rows(ds)
    assert rows[0].tag.startswith("(0002,")
    name = next(r for r in rows if r.keyword == "PatientName")
    assert name == TagRow(0, "(0010,0010)", "PatientName", "PN", "Doe^Jane")
    pixels = next(r for r in rows if r.keyword == "PixelData")
    assert pixels.value == "<8 bytes of pixel data>"


def test_sequences_are_flattened_with_item_rows():
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    outer = Dataset()
    outer.AnatomicRegionSequence = [inner, inner]
    rows = tag_rows(outer)
    assert [(r.depth, r.tag, r.value) for r in rows] == [
        (0, "(0008,2218)", "2 item(s)"),
        (1, ITEM_TAG, "Item 1"),
        (2, "(0008,0100)", "T-A0100"),
        (1, ITEM_TAG, "Item 2"),
        (2, "(0008,0100)", "T-A0100"),
    ]


def _nested(depth: int) -> Dataset:
    ds = Dataset()
    for _ in range(depth):
        parent = Dataset()
        parent.ContentSequence = [ds]
        ds = parent
    return ds


def test_depth_is_bounded_and_deep_nesting_does_not_recurse():
    rows = tag_rows(_nested(5000), depth_max=8)  # far beyond Python's recursion limit
    assert max(r.depth for r in rows) <= 9
    assert rows[-1].value == "(nested too deeply to show)"


def test_rows_and_values_are_bounded():
    ds = Dataset()
    ds.StudyDescription = "x" * 5000
    ds.ReferencedFrameNumber = list(range(1, 10000))
    for k in range(100):
        ds.add_new(Tag(0x0009, 0x1000 + k), "LO", f"private {k}")
    rows = tag_rows(ds, rows_max=50, value_chars_max=40)
    assert len(rows) == 50 and rows[-1].value == "(more elements not shown)"
    assert all(len(r.value) <= 40 for r in rows)
    assert tag_rows(ds, rows_max=0) == []


def test_bad_values_never_raise():
    ds = Dataset()
    ds.PatientID = "ok"
    # A raw element whose value cannot be converted (a DS that is not a number, wrong length US).
    ds[0x00280030] = RawDataElement(Tag(0x00280030), "DS", 7, b"abc\\def", 0, False, True)
    ds[0x00280010] = RawDataElement(Tag(0x00280010), "US", 3, b"\x01\x02\x03", 0, False, True)
    rows = tag_rows(ds)
    assert len(rows) == 3 and {r.tag for r in rows} == {"(0010,0020)", "(0028,0030)", "(0028,0010)"}
    assert all(isinstance(r.value, str) for r in rows)
