"""Pictures of a series: its frames as the 2D view shows them (8-bit display values) and PNG / JPEG files of them.

The display values come from the viewer's own path: :class:`~viewer.dicom.image.DicomImage` decodes (every
transfer syntax the viewer reads, every frame of a multi-frame image, colour as RGB), then
:class:`~viewer.dicom.pixels.GrayPipeline` (Modality LUT or rescale, then the VOI LUT, the file's first window
or the frame's min/max, MONOCHROME1 inverted) or :func:`~viewer.dicom.pixels.render_color` (colour kept) turn
stored values into what the screen shows, so a picture is the view without its overlay text, annotations,
zoom or rotation.  Nothing but pixels is written: no text chunk, no EXIF, nothing of the patient.

Memory stays bounded: one instance is decoded at a time (a multi-frame image is one instance), and frames are
yielded one by one.  Files are written 0600 (:mod:`viewer.private`); a failed write leaves no partial file.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from pydicom.dataset import Dataset

from viewer.dicom.image import DicomImage
from viewer.dicom.pixels import GrayPipeline, Window, render_color
from viewer.dicom.series import FrameRef, order_frames
from viewer.errors import ExportError, StorageFullError
from viewer.private import PRIVATE_FILE
from viewer.reading.objects import is_image_instance

if TYPE_CHECKING:
    from viewer.library.store import Library

PICTURE_FORMS = ("png", "jpeg")
JPEG_QUALITY = 95  # Pillow's scale 1..95; with no chroma subsampling for colour (4:4:4)
PNG_COMPRESS_LEVEL = 3  # lossless at every level; on a noisy 512x512 slice 3 took a quarter of 6's time for 15 % more
_PIPELINES_KEPT = 8

WindowArg = tuple[float, float] | None  # (center, width) in modality units (e.g. HU), or None: as the view


def series_refs(library: Library, series_uid: str) -> list[FrameRef]:
    """The series' image frames in display order (the 2D view's order, :func:`viewer.dicom.series.order_frames`),
    leaving out instances that hold no pixels (a presentation state filed in the series, say).  Opens no file."""
    return order_frames([r for r in library.instances(series_uid) if is_image_instance(r)])


def series_frame_count(library: Library, series_uid: str) -> int:
    """How many frames :func:`series_frames` yields (for progress); opens no file."""
    return len(series_refs(library, series_uid))


def series_frames(library: Library, series_uid: str, *, window: WindowArg = None) -> Iterator[np.ndarray]:
    """8-bit display frames (H x W uint8 grey, or H x W x 3 uint8 RGB) of a library series in display order, every
    frame of multi-frame images, as the 2D view renders them with ``window`` (None: the VOI LUT, else the file's
    first window, else the frame's min/max, as the view does before the user sets one).

    One instance is decoded at a time.  Raises the :class:`~viewer.errors.DicomError` of an image that cannot be
    decoded (a sentence)."""
    renderer = _Renderer(window)
    path: Path | None = None
    image: DicomImage | None = None
    for ref in series_refs(library, series_uid):
        if ref.path != path:
            image = None  # the previous instance's pixels go before the next is read
            image = DicomImage.open(ref.path)
            path = ref.path
        assert image is not None
        if ref.frame_index < image.info.frames:
            yield renderer.render(image, ref.frame_index)


def dataset_frames(datasets: Iterable[Dataset], *, window: WindowArg = None) -> Iterator[np.ndarray]:
    """Like :func:`series_frames` for data sets given in display order (e.g. already de-identified, or with
    rectangles blacked out): every frame of each, one data set decoded at a time."""
    renderer = _Renderer(window)
    for ds in datasets:
        image = DicomImage.from_dataset(ds)
        for index in range(image.info.frames):
            yield renderer.render(image, index)
        del image


class _Renderer:
    """Stored frame -> display frame, as :class:`viewer.ui.viewport.Viewport` does it (user inversion off); the
    grey pipelines are shared by instances with the same LUT parameters (building one costs a 64 Ki-entry table)."""

    def __init__(self, window: WindowArg) -> None:
        self.window = Window(float(window[0]), float(window[1])) if window is not None else None
        self._pipelines: OrderedDict[tuple, GrayPipeline] = OrderedDict()

    def render(self, image: DicomImage, index: int) -> np.ndarray:
        stored = image.frame(index)
        if stored.ndim == 3:
            return render_color(stored, self.window)
        out = self._pipeline(image).render(stored, self.window)
        return np.ascontiguousarray(out, dtype=np.uint8)

    def _pipeline(self, image: DicomImage) -> GrayPipeline:
        info = image.info
        key = (info.bits_allocated, info.bits_stored, info.pixel_representation, info.float_pixels,
               info.photometric, info.rescale_slope, info.rescale_intercept, info.windows, info.voi_lut_function,
               _lut_key(image.voi_lut), _lut_key(image.modality_lut))
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            pipeline = self._pipelines[key] = GrayPipeline(info, voi_lut=image.voi_lut,
                                                           modality_lut=image.modality_lut)
            while len(self._pipelines) > _PIPELINES_KEPT:
                self._pipelines.popitem(last=False)
        return pipeline


def _lut_key(item: Dataset | None) -> tuple | None:
    if item is None:
        return None
    return (tuple(item.LUTDescriptor), bytes(item.LUTData))


# -- writing ---------------------------------------------------------------------------------------------------


def check_frame(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous H x W or H x W x 3 uint8 array; ValueError for anything else (a caller's bug)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)) \
            or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"a display frame is H x W or H x W x 3 uint8, not {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame)


def write_picture(frame: np.ndarray, path: Path, form: str) -> None:
    """Write one display frame as ``form`` "png" (lossless: the exact display values) or "jpeg" (quality 95,
    colour without chroma subsampling), 0600, pixels only.  Raises ExportError or StorageFullError (a sentence);
    a failed write leaves no file behind."""
    from PIL import Image

    if form not in PICTURE_FORMS:
        raise ValueError(f"unknown picture form {form!r}; known: {', '.join(PICTURE_FORMS)}")
    picture = Image.fromarray(check_frame(frame))
    path = Path(path)
    options = ({"format": "PNG", "compress_level": PNG_COMPRESS_LEVEL} if form == "png"
               else {"format": "JPEG", "quality": JPEG_QUALITY, "subsampling": 0})
    try:
        fp = private_output(path)
    except OSError as exc:
        raise write_failure(exc, "picture") from exc
    try:
        with fp:
            picture.save(fp, **options)
    except OSError as exc:
        remove_partial(path)
        raise write_failure(exc, "picture") from exc


def private_output(path: Path) -> BinaryIO:
    """``path`` opened for writing (created or truncated), 0600 whatever the umask or an earlier file's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def remove_partial(path: Path) -> None:
    """Remove what a failed write left at ``path`` (nothing that looks complete stays)."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass


def write_failure(exc: OSError, what: str) -> ExportError | StorageFullError:
    """The user's sentence for a failed write of a ``what`` ("picture", "movie"): the disk is full, or why not
    (the system's reason only: no path, which may hold a patient's name)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"The disk is full: the {what} could not be written.")
    reason = exc.strerror or "the file could not be written"
    return ExportError(f"The {what} could not be written: {reason[0].lower()}{reason[1:]}.")
