"""Frame timing from headers and the cine clock (viewer.dicom.cine): precedence, bounds, and which frame is due at
a given elapsed time.  Pure: the times are given, no sleeps and no wall clock."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from tests.dicom.generated import cine_dataset
from viewer.dicom import cine
from viewer.dicom.cine import CineClock, FrameTiming, frame_timing, series_timing, uniform_timing


def header(frames=10, **elements) -> Dataset:
    ds = Dataset()
    ds.NumberOfFrames = frames
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def test_frame_time_from_a_real_file(tmp_path) -> None:
    path = tmp_path / "loop.dcm"
    pydicom.dcmwrite(path, cine_dataset(frames=90, size=32), enforce_file_format=True)
    timing = frame_timing(pydicom.dcmread(path, stop_before_pixels=True))
    assert (timing.source, timing.frames, timing.uniform) == (cine.FRAME_TIME, 90, True)
    assert timing.rate_fps == pytest.approx(30.0, abs=0.01)


def test_frame_time_vector_steps_are_kept() -> None:
    timing = frame_timing(header(4, FrameTimeVector=[0, 20, 60, 20]))
    assert timing.source == cine.FRAME_TIME_VECTOR
    assert timing.times_ms == (0, 20, 80, 100)
    assert timing.period_ms == pytest.approx(100 + 100 / 3)  # last step back to frame 0: the mean step
    looped = frame_timing(header(4, FrameTimeVector=[40, 20, 60, 20]))  # first = time from the previous frame
    assert looped.times_ms == (0, 20, 80, 100) and looped.period_ms == 140
    short = frame_timing(header(4, FrameTimeVector=[20, 60, 20]))  # N-1 steps
    assert short.times_ms == (0, 20, 80, 100)


def test_precedence() -> None:
    both = dict(FrameTimeVector=[0, 20, 20, 20], FrameTime=50)
    assert frame_timing(header(4, **both)).source == cine.FRAME_TIME_VECTOR  # no pointer: the vector first
    pointed = frame_timing(header(4, FrameIncrementPointer=Tag(0x0018, 0x1063), **both))
    assert (pointed.source, pointed.rate_fps) == (cine.FRAME_TIME, pytest.approx(20.0))
    acquisition_first = frame_timing(header(4, FrameTime=50, RecommendedDisplayFrameRate=10, CineRate=5))
    assert acquisition_first.source == cine.FRAME_TIME
    assert frame_timing(header(4, RecommendedDisplayFrameRate=10, CineRate=5)).source == cine.RECOMMENDED_RATE
    assert frame_timing(header(4, CineRate=5)).rate_fps == pytest.approx(5.0)
    # A pointer to something else than time (an NM energy window): the frames are not a time sequence.
    nm = header(4, FrameIncrementPointer=Tag(0x0054, 0x0010), FrameTime=50, CineRate=5)
    assert frame_timing(nm).source == cine.CINE_RATE


@pytest.mark.parametrize("elements", [
    dict(FrameTime=0), dict(FrameTime=-33), dict(FrameTime="1e-300"), dict(FrameTime=1e9),
    dict(RecommendedDisplayFrameRate=0), dict(CineRate=100_000), dict(FrameTimeVector=[0, 0, 0, 0]),
    dict(FrameTimeVector=[0, 20, -5, 20]), dict(FrameTimeVector=[0, 20]),  # wrong length
    dict(FrameTimeVector=[0, 1e9, 20, 20]),
])
def test_zero_negative_or_absurd_timing_is_ignored(elements) -> None:
    assert frame_timing(header(4, **elements)) is None


def test_an_unreadable_value_is_ignored() -> None:
    ds = header(4)
    ds[0x00181063] = RawDataElement(Tag(0x00181063), "DS", 3, b"abc", 0, True, True)
    assert frame_timing(ds) is None


def test_bad_timing_falls_back_to_the_next_source() -> None:
    assert frame_timing(header(4, FrameTimeVector=[0, -1, 2, 3], FrameTime=40)).source == cine.FRAME_TIME
    assert frame_timing(header(4, FrameTime=0, CineRate=25)).source == cine.CINE_RATE


def test_single_frames_and_huge_frame_counts_have_no_timing() -> None:
    assert frame_timing(header(1, FrameTime=40)) is None
    assert frame_timing(header(10**9, FrameTime=40)) is None


def test_series_timing() -> None:
    multi = header(90, FrameTime=1000 / 30)
    assert series_timing(multi, 90).frames == 90
    single = header(1, FrameTime=40)  # a series of single frames that say their rate
    timing = series_timing(single, 12)
    assert (timing.frames, timing.rate_fps) == (12, pytest.approx(25.0))
    assert series_timing(header(1), 12) is None
    assert series_timing(multi, 1) is None


def test_uniform_clock_drops_frames_rather_than_slowing_down() -> None:
    clock = CineClock(uniform_timing(90, 30.0))
    assert clock.frame_at(0) == 0
    assert clock.frame_at(33.0) == 0 and clock.frame_at(33.4) == 1
    assert clock.frame_at(500) == 15  # a paint that took half a second: frames 1-14 are skipped
    assert clock.frame_at(3000 + 100) == 3  # looped after 90 frames (3 s)
    assert clock.next_change_ms(0) == pytest.approx(1000 / 30)
    assert clock.next_change_ms(500) == pytest.approx(16 * 1000 / 30)


def test_clock_starts_from_the_frame_on_screen() -> None:
    clock = CineClock(uniform_timing(10, 10.0), start=7)
    assert clock.frame_at(0) == 7 and clock.frame_at(250) == 9 and clock.frame_at(350) == 0
    assert clock.next_change_ms(250) == pytest.approx(300)


def test_vector_clock_follows_the_steps() -> None:
    timing = FrameTiming(4, 160.0, cine.FRAME_TIME_VECTOR, (0.0, 20.0, 80.0, 100.0))
    clock = CineClock(timing)
    assert [clock.frame_at(t) for t in (0, 19.9, 20, 79, 80, 99, 100, 159, 160, 181)] == [0, 0, 1, 1, 2, 2, 3, 3,
                                                                                          0, 1]
    assert [clock.next_change_ms(t) for t in (0, 20, 80, 100, 170)] == [20, 80, 100, 160, 180]


def test_out_of_bounds_user_rates() -> None:
    assert uniform_timing(10, 0) is None and uniform_timing(10, float("inf")) is None
    assert uniform_timing(1, 30) is None
    assert uniform_timing(10, 1000.0).rate_fps == pytest.approx(1000.0)
