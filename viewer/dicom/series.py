"""A series as an ordered list of frames, decoded lazily into a bounded cache.

Ordering (:func:`order_frames`) uses only what the library index holds, so a series can be laid out before any
file is opened.  :class:`SeriesImages` decodes frames on demand or in a background :meth:`~SeriesImages.preload`
and keeps only decoded stored arrays (never datasets holding pixel data), under a byte limit.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

from viewer.errors import DicomError, MalformedDicomError, OperationCancelled
from viewer.library.header import FRAMES_PER_INSTANCE_MAX

from .image import IMAGE_BYTES_MAX, DicomImage, ImageInfo, image_info, read_header
from .info import lut_items
from .pixels import GrayPipeline

if TYPE_CHECKING:
    from viewer.library.store import InstanceRecord

log = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ by less are "the same orientation"
HEADERS_CACHED_MAX = 64  # headers (without pixel data) kept for the tag browser; others are re-read
PIPELINES_CACHED_MAX = 32  # a 16-bit pipeline holds a 512 KiB modality table


@dataclass(frozen=True)
class FrameRef:
    """One displayable frame: frame ``frame_index`` of the instance stored at ``path``."""

    path: Path
    frame_index: int
    sop_instance_uid: str
    position: tuple[float, float, float] | None  # Image Position (Patient), mm; None for multi-frame frames
    instance_number: int | None


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The normal of an image plane: row direction x column direction (PS3.3 C.7.6.2.1.1)."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    return np.cross(row, col)


def _same_orientation(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) <= ORIENTATION_TOLERANCE for x, y in zip(a, b, strict=True))


def order_frames(instances: list[InstanceRecord]) -> list[FrameRef]:
    """Order a series' frames for display; opens no file.

    Geometric order (Image Position projected on the slice normal, ascending) when every instance has a
    position and an orientation and all orientations agree; else by Instance Number (missing last).  Ties
    are broken by Instance Number, then SOP Instance UID, so the order is deterministic.  A multi-frame
    instance contributes its frames in frame order.
    """
    if not instances:
        return []
    first = instances[0].image_orientation
    geometric = first is not None and all(
        r.image_position is not None and r.image_orientation is not None
        and _same_orientation(r.image_orientation, first)
        for r in instances
    )

    def by_number(r: InstanceRecord) -> tuple[bool, int, str]:
        return (r.instance_number is None, r.instance_number or 0, r.sop_instance_uid)

    if geometric:
        normal = slice_normal(first)  # type: ignore[arg-type]

        def by_distance(r: InstanceRecord) -> tuple[float, tuple[bool, int, str]]:
            return (float(np.dot(normal, r.image_position)), by_number(r))  # type: ignore[arg-type]

        ordered = sorted(instances, key=by_distance)
    else:
        ordered = sorted(instances, key=by_number)

    frames: list[FrameRef] = []
    for r in ordered:
        # the index bounds it when the instance is stored; an index written before that may not have
        count = max(1, min(r.number_of_frames, FRAMES_PER_INSTANCE_MAX))
        for index in range(count):
            frames.append(FrameRef(
                path=Path(r.path),
                frame_index=index,
                sop_instance_uid=r.sop_instance_uid,
                position=r.image_position if count == 1 else None,
                instance_number=r.instance_number,
            ))
    return frames


def priority_order(n: int, start: int = 0) -> list[int]:
    """The order in which to load ``n`` frames: first, middle, last, then the rest outward from the first.

    ``start`` (addition to the contract) is the frame being looked at: it comes first and the rest spread
    outward from it, alternating after then before.
    """
    if n <= 0:
        return []
    start = min(max(start, 0), n - 1)
    order: list[int] = []
    seen: set[int] = set()
    for i in (start, 0, n // 2, n - 1):
        if i not in seen:
            seen.add(i)
            order.append(i)
    for step in range(1, n):
        for i in (start + step, start - step):
            if 0 <= i < n and i not in seen:
                seen.add(i)
                order.append(i)
    return order


class SeriesImages:
    """The decoded frames of one series, thread-safe.

    Keeps per instance: its :class:`ImageInfo` (small) and any decoding error (re-raised, never retried); per
    frame: the decoded stored array, in an LRU bounded by ``cache_bytes_max`` (the frame just asked for is
    always kept, even if it alone exceeds the limit).  Frames of one multi-frame instance are decoded together (one read
    of the file) and cached as views of one array, so their memory is freed when the last of them is evicted.
    Headers (without pixel data) are kept for the last :data:`HEADERS_CACHED_MAX` instances and re-read from
    disk otherwise.
    """

    def __init__(self, frames: list[FrameRef], *, cache_bytes_max: int = 1 << 30,
                 max_image_bytes: int = IMAGE_BYTES_MAX) -> None:
        self._frames = list(frames)
        self.cache_bytes_max = int(cache_bytes_max)
        self.max_image_bytes = int(max_image_bytes)
        self._lock = threading.RLock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()  # frame index -> stored array
        self._cache_bytes = 0
        self._infos: dict[Path, ImageInfo] = {}
        self._errors: dict[Path, DicomError] = {}
        self._headers: OrderedDict[Path, Dataset] = OrderedDict()
        self._luts: dict[Path, tuple[Dataset | None, Dataset | None]] = {}
        self._pipelines: OrderedDict[tuple, GrayPipeline] = OrderedDict()
        self._decode_locks: dict[Path, threading.Lock] = {}
        self._frames_of: dict[Path, list[int]] = {}
        for i, ref in enumerate(self._frames):
            self._frames_of.setdefault(ref.path, []).append(i)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frames(self) -> list[FrameRef]:
        return list(self._frames)

    @property
    def cache_bytes(self) -> int:
        """Bytes of decoded frames now held (addition to the contract)."""
        with self._lock:
            return self._cache_bytes

    def frame_ref(self, i: int) -> FrameRef:
        return self._frames[i]

    # -- decoding ---------------------------------------------------------------------------------------

    def _raise_if_failed(self, path: Path) -> None:
        with self._lock:
            error = self._errors.get(path)
        if error is not None:
            raise error

    def _decode_lock(self, path: Path) -> threading.Lock:
        with self._lock:
            lock = self._decode_locks.get(path)
            if lock is None:
                lock = self._decode_locks[path] = threading.Lock()
            return lock

    def _load(self, i: int) -> np.ndarray:
        ref = self._frames[i]
        with self._decode_lock(ref.path):  # one decode per file even when the GUI and preload race
            with self._lock:
                cached = self._cache.get(i)
                if cached is not None:
                    self._cache.move_to_end(i)
                    return cached
            self._raise_if_failed(ref.path)
            try:
                image = DicomImage.open(ref.path, max_bytes=self.max_image_bytes)
            except DicomError as exc:
                log.info("cannot decode instance %s: %s", ref.sop_instance_uid, type(exc).__name__)
                with self._lock:
                    self._errors[ref.path] = exc
                raise
            with self._lock:
                self._infos[ref.path] = image.info
                self._luts[ref.path] = (image.voi_lut, image.modality_lut)
                self._remember_header(ref.path, image.header)
                for j in self._frames_of[ref.path]:
                    index = self._frames[j].frame_index
                    if 0 <= index < image.info.frames and j not in self._cache:
                        if j == i or self._fits(image.frame(index).nbytes):
                            self._put(j, image.frame(index))
                if not 0 <= ref.frame_index < image.info.frames:
                    error = MalformedDicomError(f"The image has no frame {ref.frame_index + 1}.")
                    self._errors[ref.path] = error
                    raise error
                return image.frame(ref.frame_index)

    def _fits(self, nbytes: int) -> bool:
        return self._cache_bytes + nbytes <= self.cache_bytes_max

    def _put(self, i: int, arr: np.ndarray) -> None:
        """Cache frame ``i``; evict least-recently-used frames beyond the byte limit (caller holds the lock)."""
        self._cache[i] = arr
        self._cache_bytes += arr.nbytes
        while self._cache_bytes > self.cache_bytes_max and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes

    def _remember_header(self, path: Path, header: Dataset) -> None:
        self._headers[path] = header
        self._headers.move_to_end(path)
        while len(self._headers) > HEADERS_CACHED_MAX:
            self._headers.popitem(last=False)

    # -- public -----------------------------------------------------------------------------------------

    def stored(self, i: int) -> np.ndarray:
        """Frame ``i``'s stored values (grayscale) or RGB (colour), decoding it if needed.  Read-only.

        Raises the frame's DicomError (remembered: a failing file is not re-read on every request).
        """
        with self._lock:
            cached = self._cache.get(i)
            if cached is not None:
                self._cache.move_to_end(i)
                return cached
        return self._load(i)

    def is_loaded(self, i: int) -> bool:
        with self._lock:
            return i in self._cache

    def loaded_count(self) -> int:
        with self._lock:
            return len(self._cache)

    def error(self, i: int) -> DicomError | None:
        """The remembered error of frame ``i``, if decoding it failed (addition to the contract)."""
        with self._lock:
            return self._errors.get(self._frames[i].path)

    def header(self, i: int) -> Dataset:
        """Frame ``i``'s instance header, without pixel data."""
        path = self._frames[i].path
        with self._lock:
            header = self._headers.get(path)
            if header is not None:
                self._headers.move_to_end(path)
                return header
        header = read_header(path)
        with self._lock:
            self._remember_header(path, header)
        return header

    def info(self, i: int) -> ImageInfo:
        """Frame ``i``'s image facts (reads only the header when the frame is not decoded yet)."""
        path = self._frames[i].path
        with self._lock:
            info = self._infos.get(path)
        if info is None:
            self._raise_if_failed(path)
            try:
                header = self.header(i)
                info = image_info(header, max_bytes=self.max_image_bytes)
                luts = lut_items(header, info)
            except DicomError as exc:
                with self._lock:
                    self._errors[path] = exc
                raise
            with self._lock:
                info = self._infos.setdefault(path, info)
                self._luts.setdefault(path, luts)
        return info

    def pipeline(self, i: int) -> GrayPipeline:
        """The grayscale pipeline for frame ``i``, shared by frames with the same LUT parameters."""
        path = self._frames[i].path
        info = self.info(i)
        with self._lock:
            voi_lut, modality_lut = self._luts[path]  # set together with the info
        key = (
            info.bits_allocated, info.bits_stored, info.pixel_representation, info.float_pixels,
            info.photometric, info.rescale_slope, info.rescale_intercept, info.windows, info.voi_lut_function,
            _lut_key(voi_lut), _lut_key(modality_lut),
        )
        with self._lock:
            pipeline = self._pipelines.get(key)
            if pipeline is not None:
                self._pipelines.move_to_end(key)
                return pipeline
        pipeline = GrayPipeline(info, voi_lut=voi_lut, modality_lut=modality_lut)
        with self._lock:
            pipeline = self._pipelines.setdefault(key, pipeline)
            while len(self._pipelines) > PIPELINES_CACHED_MAX:
                self._pipelines.popitem(last=False)
        return pipeline

    def preload(self, order: Iterable[int], cancel: threading.Event,
                progress: Callable[[int, int], None] | None = None) -> int:
        """Decode frames in ``order`` (for a background thread); returns how many are loaded or failed.

        Stops when ``cancel`` is set (raising OperationCancelled) or when the cache is full, because decoding
        more would only evict what was just decoded.  Per-frame errors are remembered, not raised.
        """
        order = list(order)
        total = len(order)
        done = 0
        for i in order:
            if cancel.is_set():
                raise OperationCancelled("Loading the series was cancelled.")
            if not self.is_loaded(i):
                with self._lock:
                    full = self._cache_bytes >= self.cache_bytes_max
                if full:
                    break
                try:
                    self.stored(i)
                except DicomError:
                    pass  # remembered; stored(i) re-raises it for the view
            done += 1
            if progress is not None:
                progress(done, total)
        return done


def _lut_key(item: Dataset | None) -> tuple | None:
    if item is None:
        return None
    return (tuple(item.LUTDescriptor), bytes(item.LUTData))
