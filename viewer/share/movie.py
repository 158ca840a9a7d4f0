"""Cine loops as files: an MP4 (H.264) movie or an animated PNG of display frames, each frame at its own time.

Timing is :class:`viewer.dicom.cine.FrameTiming`, the same the viewer's cine player uses: a Frame Time Vector
(varying steps) gives each frame its own start time, not a resampled constant rate; a constant rate gives
equal steps; and the last frame lasts until the loop would start again, so the duration is the loop's period
(frames x frame time for a constant rate).  A series whose header gives no timing plays at
:data:`DEFAULT_FPS` (:func:`series_timing_for`).

MP4: written with PyAV (FFmpeg's libavformat and libx264 inside the ``av`` wheel: no external program, no
temporary file): H.264 High profile, ``yuv420p`` (what every player decodes), BT.601 limited range, constant
quality (CRF :data:`CRF`), the index (``moov``) first so that a browser plays it while it downloads.  Timestamps are in :data:`TIME_BASE` (1/90 000 s, the MPEG clock), computed from each
frame's absolute start so rounding never accumulates.  4:2:0 needs even sizes: an odd width or height gets one
more column or row, a copy of the last one (no black line, no colour bleeding at the edge).

Animated PNG: lossless, loops forever, each frame's delay its own step (a fraction of a second with a 16-bit
denominator, as APNG allows).  Every frame is encoded by Pillow's PNG encoder and streamed to the file as it comes
(Pillow's own animated writer holds every frame in memory and merges identical consecutive frames); the frame
count in the ``acTL`` chunk is written at the end.

Both write only pixels and timing: no title, no comment, nothing of the patient (FFmpeg adds its own
``encoder`` tag).  Files are 0600; a cancelled or failed write leaves no file behind.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from viewer.dicom.cine import FrameTiming, series_timing, uniform_timing
from viewer.dicom.image import read_header
from viewer.errors import ExportError, OperationCancelled

from .pictures import (
    PNG_COMPRESS_LEVEL,
    check_frame,
    private_output,
    remove_partial,
    series_refs,
    write_failure,
)

if TYPE_CHECKING:
    from viewer.library.store import Library

DEFAULT_FPS = 10.0
DEFAULT = "default"  # FrameTiming.source when the header gives no timing
TIME_BASE = Fraction(1, 90000)
CRF = 18  # x264's constant quality: 18 is usually called visually lossless (0 lossless, 23 x264's default)
PRESET = "medium"  # x264's speed/size balance (its default)
_DELAY_DENOMINATOR_MAX = 0xFFFF  # APNG fcTL delay_num / delay_den are 16-bit


def series_timing_for(library: Library, series_uid: str) -> FrameTiming:
    """The cine timing of a library series as the viewer's player uses it (from the first frame's instance
    header, :func:`viewer.dicom.cine.series_timing`), else :data:`DEFAULT_FPS` frames per second (source
    :data:`DEFAULT`).  For fewer than two frames: a one-frame timing (a movie of it is refused)."""
    refs = series_refs(library, series_uid)
    count = len(refs)
    timing = series_timing(read_header(refs[0].path), count) if count >= 2 else None
    if timing is None:
        timing = uniform_timing(count, DEFAULT_FPS, DEFAULT)
    return timing or FrameTiming(max(count, 1), 1000.0 / DEFAULT_FPS * max(count, 1), DEFAULT)


def frame_span_ms(timing: FrameTiming, i: int) -> tuple[float, float]:
    """(start, end) of frame ``i`` in ms after frame 0: the timing's own times, the last frame lasting until the
    loop restarts; frames beyond the timing's count continue at its mean step."""
    n = timing.frames
    step = timing.period_ms / n
    if i >= n:
        start = timing.period_ms + (i - n) * step
        return start, start + step
    end = timing.time_of(i + 1) if i + 1 < n else timing.period_ms
    return timing.time_of(i), end


def _two_or_more(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The frames, once it is known there are at least two (else ExportError: a movie of one picture is none)."""
    it = iter(frames)
    first = next(it, None)
    second = next(it, None) if first is not None else None
    if second is None:
        raise ExportError("A movie needs at least two frames; "
                          + ("this series has no images." if first is None else "this series has only one."))
    yield first
    yield second
    yield from it


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("The movie export was cancelled.")


class _Frames:
    """Checks that every frame has the first frame's size; grey frames in a colour movie become grey RGB."""

    def __init__(self, first: np.ndarray) -> None:
        self.shape = first.shape[:2]
        self.color = first.ndim == 3

    def fit(self, frame: np.ndarray) -> np.ndarray:
        frame = check_frame(frame)
        if frame.shape[:2] != self.shape:
            raise ExportError("The images of this series differ in size; a movie needs images of one size.")
        if frame.ndim == 3 and not self.color:
            raise ExportError("This series mixes colour and grey images; a movie needs one kind.")
        if self.color and frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        return frame


def write_mp4(frames: Iterable[np.ndarray], timing: FrameTiming, path: Path, *,
              cancel: threading.Event | None = None) -> int:
    """Write display frames (uint8 H x W or H x W x 3, all one size) as an H.264 MP4 at ``path`` with each frame's
    time from ``timing``; returns the frames written.  Raises ExportError (fewer than two frames, sizes that
    differ, a write that failed), StorageFullError, or OperationCancelled (``cancel`` is checked between frames)."""
    import av

    path = Path(path)
    stream_in = _two_or_more(frames)
    written = 0
    container = None
    created = False
    try:
        first = check_frame(next(stream_in))
        shape = _Frames(first)
        rows, cols = shape.shape
        height, width = rows + rows % 2, cols + cols % 2
        private_output(path).close()  # created 0600 here; FFmpeg opens the existing file and keeps its mode
        created = True
        container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        stream = container.add_stream("libx264")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = TIME_BASE
        context = stream.codec_context
        context.time_base = TIME_BASE
        context.framerate = Fraction(timing.rate_fps).limit_denominator(1001)
        context.colorspace, context.color_range = av.video.reformatter.Colorspace.ITU601, \
            av.video.reformatter.ColorRange.MPEG
        stream.options = {"crf": str(CRF), "preset": PRESET}
        durations: dict[int, int] = {}
        for frame in _chain(first, stream_in):
            _check_cancel(cancel)
            start, end = (round(t / 1000 / TIME_BASE) for t in frame_span_ms(timing, written))
            picture = av.VideoFrame.from_ndarray(_even(shape.fit(frame), height, width),
                                                 format="rgb24" if shape.color else "gray")
            picture = picture.reformat(format="yuv420p", dst_colorspace="ITU601")
            picture.pts, picture.time_base = start, TIME_BASE
            durations[start] = end - start
            _mux(container, stream.encode(picture), durations)
            written += 1
        _mux(container, stream.encode(None), durations)
        container.close()
        container = None
    except BaseException as exc:
        if container is not None:
            _close_quietly(container)
        if created:
            remove_partial(path)
        if isinstance(exc, OSError):  # PyAV's errors for files are OSErrors with the errno
            raise write_failure(exc, "movie") from exc
        if isinstance(exc, av.FFmpegError):
            raise ExportError("The movie could not be encoded.") from exc
        raise
    return written


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _even(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad to an even size (4:2:0 chroma) by repeating the last row / column."""
    extra_rows, extra_cols = height - frame.shape[0], width - frame.shape[1]
    if not extra_rows and not extra_cols:
        return frame
    pad = ((0, extra_rows), (0, extra_cols)) + (((0, 0),) if frame.ndim == 3 else ())
    return np.pad(frame, pad, mode="edge")


def _mux(container, packets, durations: dict[int, int]) -> None:
    """Mux the encoder's packets, each with its frame's duration (the encoder leaves it 0: the last frame's
    would be lost, and with it the end of a varying loop)."""
    for packet in packets:
        if packet.pts is not None:
            packet.duration = durations.pop(packet.pts, 0)
        container.mux(packet)


def _close_quietly(container) -> None:
    try:
        container.close()
    except Exception:  # the movie is discarded anyway; the first error is the one reported
        pass


# -- animated PNG ----------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        yield kind, png[at + 8:at + 8 + length]
        at += 12 + length


def _delay(duration_ms: float) -> tuple[int, int]:
    """APNG's delay_num / delay_den (seconds) nearest to ``duration_ms``, both 16-bit."""
    delay = Fraction(max(duration_ms, 0.0) / 1000).limit_denominator(_DELAY_DENOMINATOR_MAX)
    if delay.numerator > 0xFFFF:  # over 65 s: whole hundredths are enough
        delay = Fraction(min(round(duration_ms / 10), 0xFFFF), 100)
    return delay.numerator, delay.denominator


class _ApngWriter:
    """APNG (W3C PNG 3rd edition, section 4.3 / the APNG specification): signature, IHDR, acTL, then per frame an
    fcTL and the image data (IDAT for the first frame, which is also the default image; fdAT after), IEND."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.frames = 0
        self.sequence = 0
        self._actl_at = -1

    def add(self, frame: np.ndarray, duration_ms: float) -> None:
        from PIL import Image

        encoded = io.BytesIO()
        Image.fromarray(frame).save(encoded, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        chunks = list(_png_chunks(encoded.getvalue()))
        if self.frames == 0:
            self.fp.write(_PNG_SIGNATURE)
            for kind, data in chunks:
                if kind == b"IHDR":
                    self.fp.write(_chunk(kind, data))
            self._actl_at = self.fp.tell()
            self.fp.write(_chunk(b"acTL", struct.pack(">II", 0, 0)))  # frame count set in finish(); loop forever
        rows, cols = frame.shape[:2]
        num, den = _delay(duration_ms)
        self._write(b"fcTL", struct.pack(">IIIIIHHBB", self.sequence, cols, rows, 0, 0, num, den, 0, 0))
        for kind, data in chunks:
            if kind != b"IDAT":
                continue
            if self.frames == 0:
                self.fp.write(_chunk(b"IDAT", data))
            else:
                self._write(b"fdAT", struct.pack(">I", self.sequence) + data)
        self.frames += 1

    def _write(self, kind: bytes, data: bytes) -> None:
        self.fp.write(_chunk(kind, data))
        self.sequence += 1

    def finish(self) -> None:
        self.fp.write(_chunk(b"IEND", b""))
        self.fp.seek(self._actl_at)
        self.fp.write(_chunk(b"acTL", struct.pack(">II", self.frames, 0)))


def write_apng(frames: Iterable[np.ndarray], timing: FrameTiming, path: Path, *,
               cancel: threading.Event | None = None) -> int:
    """Write display frames as an animated PNG (lossless, looping) at ``path``, each frame lasting its step of
    ``timing``; returns the frames written.  Errors as :func:`write_mp4`."""
    path = Path(path)
    stream_in = _two_or_more(frames)
    written = 0
    created = False
    try:
        first = check_frame(next(stream_in))
        shape = _Frames(first)
        with private_output(path) as fp:
            created = True
            writer = _ApngWriter(fp)
            for frame in _chain(first, stream_in):
                _check_cancel(cancel)
                start, end = frame_span_ms(timing, written)
                writer.add(shape.fit(frame), end - start)
                written += 1
            writer.finish()
    except BaseException as exc:
        if created:
            remove_partial(path)
        if isinstance(exc, OSError):
            raise write_failure(exc, "animated picture") from exc
        raise
    return written
