"""When each frame of a multi-frame image (or a series) is due in cine, and a clock that says which frame's time
has come (no Qt, no wall clock: callers pass the elapsed time).

Timing in the header (PS3.3 C.7.6.5 Cine Module, C.7.6.6 Multi-frame Module, C.7.6.1 General Image), in this
order of precedence (the first one present and within bounds wins):

1. The attribute named by Frame Increment Pointer (0028,0009) when it is Frame Time Vector (0018,1065) or Frame
   Time (0018,1063): the file says itself which one paces its frames.  When the pointer names something else (an
   NM energy window, a slice location), the frames are not a time sequence: neither is used.
2. Frame Time Vector: the time increments in ms between frames.  N values for N frames: the first is 0 (PS3.3
   C.7.6.5.1.2) or, in files that loop, the time from the previous (last) frame, then used as the loop's last
   step; N-1 values: the steps between frames.  Varying steps (ECG-gated, irregular acquisitions) are kept.
3. Frame Time: one step in ms for every frame.
4. Recommended Display Frame Rate (0008,2144), in frames per second.
5. Cine Rate (0018,0040), in frames per second.

The acquisition's own clock (1-3) comes before the recommendations (4-5) because cine should show motion at the
speed it happened.  Every step and the mean step must lie within :data:`~viewer.limits.FRAME_INTERVAL_MS_RANGE`
(a 0, negative, non-numeric or absurd value is ignored, never a division by zero or a stalled timer).

:class:`CineClock` drops frames rather than slowing down: given the time since play started, the frame shown is
the one whose time has come, skipping any whose time passed while painting could not keep up.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from viewer.limits import FRAME_INTERVAL_MS_RANGE, FRAMES_PER_INSTANCE_MAX

FRAME_TIME_TAG = 0x00181063
FRAME_TIME_VECTOR_TAG = 0x00181065

FRAME_TIME_VECTOR = "Frame Time Vector"
FRAME_TIME = "Frame Time"
RECOMMENDED_RATE = "Recommended Display Frame Rate"
CINE_RATE = "Cine Rate"
USER = "user"


@dataclass(frozen=True)
class FrameTiming:
    """``frames`` frames looping every ``period_ms`` (the time from frame 0 back to frame 0), from ``source``;
    ``times_ms`` gives each frame's start (ascending from 0) when the steps vary, None when they are all equal."""

    frames: int
    period_ms: float
    source: str
    times_ms: tuple[float, ...] | None = None

    @property
    def rate_fps(self) -> float:
        """The mean rate, frames per second."""
        return 1000.0 * self.frames / self.period_ms

    @property
    def uniform(self) -> bool:
        return self.times_ms is None

    def time_of(self, i: int) -> float:
        """When frame ``i`` starts, ms after frame 0."""
        return self.times_ms[i] if self.times_ms is not None else i * self.period_ms / self.frames


def uniform_timing(frames: int, fps: float, source: str = USER) -> FrameTiming | None:
    """Every frame for 1/fps s; None for fewer than two frames or a rate out of bounds."""
    if frames < 2 or not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        return None
    step = 1000.0 / fps
    if not _in_bounds(step):
        return None
    return FrameTiming(frames, frames * step, source)


def _in_bounds(step_ms: float) -> bool:
    low, high = FRAME_INTERVAL_MS_RANGE
    return math.isfinite(step_ms) and low <= step_ms <= high


def _get(ds: Any, keyword: str) -> Any:
    try:
        value = ds.get(keyword)
    except Exception:  # a damaged optional value: not given
        return None
    return None if value is None or value == "" else value


def _numbers(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        value = [value]
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers if numbers and all(math.isfinite(n) for n in numbers) else None


def _number(value: Any) -> float | None:
    numbers = _numbers(value)
    return numbers[0] if numbers else None


def _pointers(ds: Any) -> set[int] | None:
    value = _get(ds, "FrameIncrementPointer")
    if value is None:
        return None
    values = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        return {int(v) for v in values}
    except (TypeError, ValueError):
        return None


def _from_vector(values: list[float] | None, frames: int) -> FrameTiming | None:
    if values is None or frames < 2 or len(values) not in (frames, frames - 1):
        return None
    high = FRAME_INTERVAL_MS_RANGE[1]
    if any(v < 0 or v > high for v in values):
        return None
    steps = values[1:] if len(values) == frames else values  # steps[i]: from frame i to frame i + 1
    total = sum(steps)
    if total <= 0:
        return None
    mean = total / len(steps)
    last = values[0] if len(values) == frames and values[0] > 0 else mean  # the loop's step back to frame 0
    if not _in_bounds((total + last) / frames):
        return None
    times, t = [0.0], 0.0
    for step in steps:
        t += step
        times.append(t)
    return FrameTiming(frames, t + last, FRAME_TIME_VECTOR, tuple(times))


def frame_timing(ds: Any, frames: int | None = None) -> FrameTiming | None:
    """The timing of an instance's frames (precedence and bounds in the module docstring), or None: a single
    frame, or no usable timing.  ``frames`` defaults to Number of Frames."""
    if frames is None:
        frames = _frame_count(ds)
    if not 2 <= frames <= FRAMES_PER_INSTANCE_MAX:
        return None
    pointers = _pointers(ds)
    vector = _from_vector(_numbers(_get(ds, "FrameTimeVector")), frames)
    frame_time = _number(_get(ds, "FrameTime"))
    constant = uniform_timing(frames, 1000.0 / frame_time, FRAME_TIME) if frame_time else None
    if pointers is None:
        acquisition = [vector, constant]
    else:
        acquisition = ([vector] if FRAME_TIME_VECTOR_TAG in pointers else []) + (
            [constant] if FRAME_TIME_TAG in pointers else [])
    for timing in acquisition:
        if timing is not None:
            return timing
    for keyword, source in (("RecommendedDisplayFrameRate", RECOMMENDED_RATE), ("CineRate", CINE_RATE)):
        rate = _number(_get(ds, keyword))
        timing = uniform_timing(frames, rate, source) if rate else None
        if timing is not None:
            return timing
    return None


def series_timing(header: Any, count: int) -> FrameTiming | None:
    """The timing of a displayed series of ``count`` frames, read from its first instance's ``header``: that
    instance's own timing when it holds every frame; else its rate for every frame (a series of single frames, or
    of several multi-frame instances, with a Frame Time or a recommended rate)."""
    if count < 2:
        return None
    frames = _frame_count(header)
    if frames == count:
        return frame_timing(header, count)
    own = frame_timing(header, min(max(frames, 2), FRAMES_PER_INSTANCE_MAX))
    return uniform_timing(count, own.rate_fps, own.source) if own is not None else None


def _frame_count(ds: Any) -> int:
    number = _number(_get(ds, "NumberOfFrames"))
    return int(number) if number is not None and 1 <= number <= FRAMES_PER_INSTANCE_MAX else 1


class CineClock:
    """Which frame is due ``elapsed_ms`` after play started at frame ``start`` (looping); pure arithmetic."""

    def __init__(self, timing: FrameTiming, start: int = 0) -> None:
        self.timing = timing
        self._times = list(timing.times_ms) if timing.times_ms is not None else None
        self._step = timing.period_ms / timing.frames
        self._offset = timing.time_of(min(max(int(start), 0), timing.frames - 1))

    def _phase(self, elapsed_ms: float) -> tuple[float, float]:
        """(loops started before, time within the current loop)."""
        t = self._offset + max(0.0, float(elapsed_ms))
        loops = math.floor(t / self.timing.period_ms)
        return loops, t - loops * self.timing.period_ms

    def frame_at(self, elapsed_ms: float) -> int:
        """The frame whose time has come: the last one starting at or before the elapsed time (frames whose time
        passed unseen are skipped)."""
        _, phase = self._phase(elapsed_ms)
        if self._times is None:
            return min(int(phase / self._step + 1e-9), self.timing.frames - 1)
        return max(0, bisect.bisect_right(self._times, phase) - 1)

    def next_change_ms(self, elapsed_ms: float) -> float:
        """The elapsed time (since start, ms) at which the next frame after :meth:`frame_at` is due."""
        loops, phase = self._phase(elapsed_ms)
        start_of_loop = loops * self.timing.period_ms - self._offset
        if self._times is None:
            due = (self.frame_at(elapsed_ms) + 1) * self._step
        else:
            i = bisect.bisect_right(self._times, phase)
            due = self._times[i] if i < len(self._times) else self.timing.period_ms
        return start_of_loop + due
