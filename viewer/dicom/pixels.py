"""From stored values to display values: the grayscale pipeline of PS3.3 C.11 and PS3.4 N.2.1.

    stored value --Modality LUT / Rescale (C.11.1)--> modality value (e.g. HU)
                 --VOI: window (C.11.2.1.2) or VOI LUT (C.11.2.1.1)--> 0..255
                 --MONOCHROME1 inversion (C.7.6.3.1.2), then the user's invert--> displayed uint8

For 8- and 16-bit integer data every possible stored value is mapped once into a table indexed by the stored
value's bits read as unsigned (256 or 65 536 entries), so rendering a frame is one table look-up
(``table[stored.view(uint)]``).  The modality values of the table are computed once per pipeline (float64, so
values are exact); a window change recomputes only the VOI step over the table.  32-bit and float data are
computed directly, vectorised, per frame.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from .info import ImageInfo

DISPLAY_MAX = 255
TABLES_CACHED_MAX = 8  # display tables kept per pipeline (window x invert); 64 KiB each for 16-bit data
TABLE_ITEMSIZE_MAX = 2  # table look-up for stored samples of up to 2 bytes (65 536 entries)


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (e.g. HU for CT), PS3.3 C.11.2.1.2."""

    center: float
    width: float


PRESETS: dict[str, Window] = {
    "CT lung": Window(-600, 1500),
    "CT bone": Window(400, 1800),
    "CT brain": Window(40, 80),
    "CT abdomen": Window(50, 400),
}


# -- lookup tables carried in the header -------------------------------------------------------------------


@dataclass(frozen=True)
class _Lut:
    """A Modality or VOI LUT (PS3.3 C.11.1.1 / C.11.2.1.1): ``values[clip(x - first_mapped, 0, n - 1)]``."""

    first_mapped: int
    values: np.ndarray  # float64
    bits: int  # bits per entry, from the descriptor (corrected upwards if the data exceed it)

    @classmethod
    def from_item(cls, item: Dataset) -> _Lut | None:
        """Parse an item with LUT Descriptor and LUT Data; None when unusable.  LUT Data as bytes is read as
        little-endian 16-bit words (:class:`~viewer.dicom.image.DicomImage` normalises items to that)."""
        try:
            count, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
            data = item.LUTData
        except Exception:
            return None
        count = count or 0x10000  # PS3.3 C.11.1.1.1: 0 means 2^16 entries
        if isinstance(data, (bytes, bytearray)):
            words = np.frombuffer(bytes(data[: len(data) // 2 * 2]), dtype="<u2").astype(np.float64)
        else:
            try:
                words = np.asarray([float(v) for v in (data if hasattr(data, "__iter__") else [data])])
            except (TypeError, ValueError):
                return None
        words = words[:count]
        if words.size == 0:
            return None
        bits = bits if 1 <= bits <= 16 else 16
        top = int(words.max())
        if top > (1 << bits) - 1:  # a descriptor that understates its data: trust the data
            bits = max(bits, top.bit_length())
        return cls(first_mapped, words, bits)

    def apply(self, x: np.ndarray) -> np.ndarray:
        index = np.clip(np.rint(x) - self.first_mapped, 0, self.values.size - 1).astype(np.intp)
        return self.values[index]

    @property
    def output_max(self) -> int:
        return (1 << self.bits) - 1


# -- the VOI functions (PS3.3 C.11.2.1.2 and C.11.2.1.3) ---------------------------------------------------


def voi_window(x: np.ndarray, window: Window, function: str = "LINEAR") -> np.ndarray:
    """Apply a window to modality values ``x`` (float64); returns float64 in 0..255, not yet rounded.

    LINEAR (C.11.2.1.2.1): y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clamped; a width below 1 is taken as 1
    (then the window is a step at c - 0.5).  LINEAR_EXACT (C.11.3.2): y = ((x - c) / w + 0.5) * 255, clamped.
    SIGMOID (C.11.2.1.3.1): y = 255 / (1 + exp(-4 (x - c) / w)).
    """
    c = float(window.center)
    w = float(window.width)
    if function == "SIGMOID":
        w = max(w, np.finfo(np.float64).tiny)
        with np.errstate(over="ignore"):
            return DISPLAY_MAX / (1.0 + np.exp(-4.0 * (x - c) / w))
    if function == "LINEAR_EXACT":
        w = max(w, np.finfo(np.float64).tiny)
        y = ((x - c) / w + 0.5) * DISPLAY_MAX
    else:
        w = max(w, 1.0)
        if w == 1.0:
            return np.where(x > c - 0.5, float(DISPLAY_MAX), 0.0)
        y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) * DISPLAY_MAX
    return np.clip(y, 0.0, DISPLAY_MAX, out=y)


def _to_display(y: np.ndarray, invert: bool) -> np.ndarray:
    """Round 0..255 floats to the nearest integer (half to even), optionally invert, as uint8."""
    out = np.rint(y).astype(np.uint8)
    if invert:
        np.subtract(DISPLAY_MAX, out, out=out)
    return out


# -- the pipeline ------------------------------------------------------------------------------------------


class GrayPipeline:
    """The display pipeline of one grayscale image (or of all images sharing its LUT parameters).

    Thread-safe; tables are built on demand and the last :data:`TABLES_CACHED_MAX` are kept.
    """

    def __init__(self, info: ImageInfo, voi_lut: Dataset | None = None,
                 modality_lut: Dataset | None = None) -> None:
        self.info = info
        self._modality_lut = _Lut.from_item(modality_lut) if modality_lut is not None else None
        self._voi_lut = _Lut.from_item(voi_lut) if voi_lut is not None else None
        self._slope = float(info.rescale_slope)
        self._intercept = float(info.rescale_intercept)
        self._dtype = info.stored_dtype
        self._lock = threading.Lock()
        self._tables: OrderedDict[tuple[Window | None, bool], np.ndarray] = OrderedDict()
        self._uses_table = self._dtype.kind in "iu" and self._dtype.itemsize <= TABLE_ITEMSIZE_MAX
        self._index_dtype = np.dtype(f"u{self._dtype.itemsize}")
        self._modality_table: np.ndarray | None = None  # float64, indexed by the stored bits as unsigned
        self._modality_table32: np.ndarray | None = None
        if self._uses_table:
            domain = np.arange(1 << (8 * self._dtype.itemsize), dtype=self._index_dtype).view(self._dtype)
            self._modality_table = self._modality(domain)
            self._modality_table.flags.writeable = False

    @property
    def has_voi_lut(self) -> bool:
        return self._voi_lut is not None

    @property
    def uses_table(self) -> bool:
        """True when rendering is a table look-up (8/16-bit integer data)."""
        return self._uses_table

    def _modality(self, stored: np.ndarray) -> np.ndarray:
        """Modality values (float64) of stored values: Modality LUT if present, else rescale (PS3.3 C.11.1)."""
        if self._modality_lut is not None:
            return self._modality_lut.apply(stored)
        x = stored.astype(np.float64)
        if self._slope != 1.0:
            x *= self._slope
        if self._intercept != 0.0:
            x += self._intercept
        return x

    def _index(self, stored: np.ndarray) -> np.ndarray | None:
        if not self._uses_table or stored.dtype.kind not in "iub" or stored.dtype.itemsize != self._dtype.itemsize:
            return None
        return stored.view(self._index_dtype)

    def modality_value(self, stored_value: float | int) -> float:
        """The modality value (e.g. HU) of one stored value, for the pixel probe."""
        return float(self._modality(np.array([stored_value], dtype=np.float64))[0])

    def modality_array(self, stored: np.ndarray) -> np.ndarray:
        """Modality values of a stored array, float32 (e.g. for volume building or statistics)."""
        index = self._index(stored)
        if index is None:
            return self._modality(stored).astype(np.float32)
        with self._lock:
            if self._modality_table32 is None:
                assert self._modality_table is not None
                self._modality_table32 = self._modality_table.astype(np.float32)
            table = self._modality_table32
        return table[index]

    def _resolve_window(self, window: Window | None, stored: np.ndarray) -> Window | None:
        """None for "the VOI LUT", else the window to use (PS3.4 N.2.1.1: one VOI transformation)."""
        if window is not None:
            return window
        if self._voi_lut is not None:
            return None
        if self.info.windows:
            return self.info.windows[0]
        return self._minmax_window(stored)

    def _minmax_window(self, stored: np.ndarray) -> Window:
        """A window over the frame's values, ignoring Pixel Padding Value (PS3.3 C.7.5.1.1.2: outside the
        patient, e.g. the circle around a CT reconstruction) and non-finite floats."""
        if stored.dtype.kind == "f":
            stored = stored[np.isfinite(stored)]
        elif self.info.pixel_padding_value is not None:
            stored = stored[stored != stored.dtype.type(self.info.pixel_padding_value)] \
                if np.can_cast(np.min_scalar_type(self.info.pixel_padding_value), stored.dtype) else stored
        if stored.size == 0:
            return Window(0.0, 1.0)
        if self._modality_lut is None:  # rescale is monotonic: the ends are enough
            values = self._modality(np.array([stored.min(), stored.max()], dtype=np.float64))
        else:
            index = self._index(stored)
            values = self._modality_table[index] if index is not None and self._modality_table is not None \
                else self._modality(stored)
        return minmax_window(float(values.min()), float(values.max()))

    def table(self, window: Window | None, invert: bool = False) -> np.ndarray:
        """The uint8 display table over the stored-value domain (index: stored bits as unsigned).

        ``window=None`` means the VOI LUT (the table needs no frame then); requires :attr:`uses_table`.
        """
        if not self._uses_table:
            raise ValueError("this pipeline computes directly; it has no table")
        key = (window, bool(invert))
        with self._lock:
            cached = self._tables.get(key)
            if cached is not None:
                self._tables.move_to_end(key)
                return cached
        assert self._modality_table is not None
        table = self._display(self._modality_table, window, invert)
        table.flags.writeable = False
        with self._lock:
            self._tables[key] = table
            while len(self._tables) > TABLES_CACHED_MAX:
                self._tables.popitem(last=False)
        return table

    def _display(self, modality: np.ndarray, window: Window | None, invert: bool) -> np.ndarray:
        if window is None:
            assert self._voi_lut is not None
            y = self._voi_lut.apply(modality) * (DISPLAY_MAX / self._voi_lut.output_max)
        else:
            y = voi_window(modality, window, self.info.voi_lut_function)
        return _to_display(y, invert != self.info.is_monochrome1)

    def render(self, stored2d: np.ndarray, window: Window | None = None, invert: bool = False) -> np.ndarray:
        """Display values (uint8, C-contiguous, same shape) of a frame of stored values.

        ``window=None``: the VOI LUT if the image has one, else the file's first window, else the frame's
        min/max.  ``invert`` is the user's inversion, on top of MONOCHROME1's.
        """
        stored2d = np.asarray(stored2d)
        resolved = self._resolve_window(window, stored2d)
        index = self._index(stored2d)
        if index is not None:
            return np.take(self.table(resolved, invert), index)
        modality = self._modality(stored2d)
        if stored2d.dtype.kind == "f":
            modality = np.nan_to_num(modality, nan=0.0, posinf=np.finfo(np.float64).max,
                                     neginf=np.finfo(np.float64).min)
        return np.ascontiguousarray(self._display(modality, resolved, invert))


def minmax_window(lo: float, hi: float) -> Window:
    """The LINEAR window that maps ``lo`` to 0 and ``hi`` to 255 for integer-valued data (C.11.2.1.2.1)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Window(0.0, 1.0)
    width = max(hi - lo + 1.0, 1.0)
    return Window(lo + width / 2.0, width)


def default_window(info: ImageInfo, stored2d: np.ndarray) -> Window:
    """The file's first window, else one spanning the frame's modality values (min to max)."""
    if info.windows:
        return info.windows[0]
    return GrayPipeline(info)._minmax_window(np.asarray(stored2d))


def render_color(rgb: np.ndarray, window: Window | None, invert: bool = False) -> np.ndarray:
    """Display values of an RGB uint8 frame: each channel windowed as 0..255 (window None = identity)."""
    rgb = np.asarray(rgb)
    if window is None and not invert:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    domain = np.arange(256, dtype=np.float64)
    y = domain if window is None else voi_window(domain, window)
    table = _to_display(y, invert)
    return np.take(table, rgb.astype(np.uint8, copy=False))
