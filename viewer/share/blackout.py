"""Blacking out burned-in text: rectangles of every frame set to the frame's lowest stored value (no Qt).

The pixels are decoded with pydicom (within viewer.limits), changed, and stored uncompressed in Explicit VR Little
Endian; the caller (viewer.share.deidentify) records the Clean Pixel Data Option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset

from viewer.errors import ExportError
from viewer.limits import FRAMES_PER_INSTANCE_MAX, IMAGE_BYTES_MAX

if TYPE_CHECKING:
    from viewer.share.deidentify import Rect


def black_out(ds: Dataset, rects: Sequence[Rect]) -> None:
    """Set ``rects`` to the frame's lowest stored value on every frame; store uncompressed Explicit VR LE."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if "PixelData" not in ds or rows <= 0 or cols <= 0:
        raise ExportError("The image has no pixel data to black out.")
    if frames > FRAMES_PER_INSTANCE_MAX or rows * cols * frames * samples * max(bits // 8, 1) > IMAGE_BYTES_MAX:
        raise ExportError("The image is too large to black out.")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        ds.decompress()
    arr = np.array(ds.pixel_array, copy=True)
    stack = arr if frames > 1 else arr[np.newaxis]
    mono1 = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    for frame in stack:
        fill = (frame.max() if mono1 else frame.min()) if samples == 1 else 0
        for r in rects:
            x0, y0 = max(0, int(r.x)), max(0, int(r.y))
            x1, y1 = min(cols, int(r.x) + int(r.width)), min(rows, int(r.y) + int(r.height))
            if x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = fill
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PixelData = stack.astype(arr.dtype, copy=False).tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.BurnedInAnnotation = "NO"
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
