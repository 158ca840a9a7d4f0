"""Series thumbnails: the middle slice, rendered small in a worker, cached (bounded) by series UID."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage

from viewer.dicom.pixels import render_color
from viewer.dicom.series import SeriesImages, order_frames
from viewer.errors import InstanceNotFoundError
from viewer.library import Library

THUMBNAIL_PX = 96
THUMBNAILS_CACHED_MAX = 512  # ~37 KiB each at 96x96 RGB32: about 18 MiB at most
THUMBNAIL_SOURCE_BYTES_MAX = 256 << 20  # a thumbnail never decodes more than this


def render_thumbnail(library: Library, series_uid: str, size_px: int = THUMBNAIL_PX) -> QImage:
    """The series' middle frame with its file window, scaled to fit ``size_px`` (keeping physical aspect).

    Runs in a worker thread (QImage, unlike QPixmap, may be used off the GUI thread).  Raises the frame's
    viewer.errors type when it cannot be decoded.
    """
    frames = order_frames(library.instances(series_uid))
    if not frames:
        raise InstanceNotFoundError("The series has no images.")
    ref = frames[len(frames) // 2]
    series = SeriesImages([ref], cache_bytes_max=THUMBNAIL_SOURCE_BYTES_MAX,
                          max_image_bytes=THUMBNAIL_SOURCE_BYTES_MAX)
    stored = series.stored(0)
    if stored.ndim == 3:
        out = render_color(stored, None)
        fmt = QImage.Format.Format_RGB888
    else:
        out = series.pipeline(0).render(stored, None)
        fmt = QImage.Format.Format_Grayscale8
    out = np.ascontiguousarray(out, dtype=np.uint8)
    rows, cols = out.shape[:2]
    image = QImage(out.data, cols, rows, out.strides[0], fmt)
    spacing = series.info(0).pixel_spacing
    width, height = float(cols), float(rows)
    if spacing and all(s > 0 and math.isfinite(s) for s in spacing):
        height *= spacing[0] / spacing[1]
    box = QSize(max(1, round(width)), max(1, round(height))).scaled(
        QSize(size_px, size_px), Qt.AspectRatioMode.KeepAspectRatio)
    # scaled() returns a new image: the result owns its pixels, so `out` may go.
    return image.scaled(box, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation)


class ThumbnailCache:
    """Series UID -> thumbnail (any object, e.g. QIcon), least recently used evicted beyond ``max_items``."""

    def __init__(self, max_items: int = THUMBNAILS_CACHED_MAX) -> None:
        self._items: OrderedDict[str, object] = OrderedDict()
        self.max_items = max_items

    def get(self, series_uid: str):
        item = self._items.get(series_uid)
        if item is not None:
            self._items.move_to_end(series_uid)
        return item

    def put(self, series_uid: str, item: object) -> None:
        self._items[series_uid] = item
        self._items.move_to_end(series_uid)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def __contains__(self, series_uid: str) -> bool:
        return series_uid in self._items

    def __len__(self) -> int:
        return len(self._items)
