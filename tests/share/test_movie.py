"""Cine loops as MP4 (H.264) and animated PNG (viewer.share.movie), read back by Debian's FFmpeg (ffprobe for
frame count, duration and timestamps, ffmpeg for the pixels): a reader independent of the writer (PyAV)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pydicom
import pytest

from tests.dicom.generated import cine_dataset
from tests.share.ffreader import decode, frame_times, need_ffmpeg, packet_durations, stream_facts
from viewer.dicom.cine import FRAME_TIME, FRAME_TIME_VECTOR, frame_timing, uniform_timing
from viewer.errors import ExportError, OperationCancelled
from viewer.share.movie import DEFAULT, DEFAULT_FPS, series_timing_for, write_apng, write_mp4
from viewer.share.pictures import dataset_frames, series_frames

FRAMES, SIZE = 90, 128
FRAME_S = round(1000.0 / 30, 4) / 1000  # Frame Time as the file holds it (33.3333 ms)
PATIENT = ("Calibration^Phantom", "PHANTOM-1")
# Frame Time Vector (ms) of a loop: the first value is the step from the last frame back to the first
VECTOR = [70.0, 40.0, 80.0, 20.0, 60.0, 33.0, 33.0, 100.0, 25.0, 45.0]


@pytest.fixture
def cine(tmp_path, library):
    """A stored 90-frame ultrasound loop at 30 frames per second."""
    ds = cine_dataset(frames=FRAMES, size=SIZE)
    pydicom.dcmwrite(tmp_path / "cine.dcm", ds, enforce_file_format=True)
    library.store_file(tmp_path / "cine.dcm")
    return ds.SeriesInstanceUID


def assert_no_patient(path, facts: dict) -> None:
    tags = {**facts["format"].get("tags", {}), **facts["stream"].get("tags", {})}
    assert not any(word in value for value in tags.values() for word in PATIENT)
    data = path.read_bytes()
    assert not any(word.encode() in data for word in PATIENT)


def test_mp4_has_the_series_frames_duration_and_pixels(tmp_path, library, cine) -> None:
    need_ffmpeg()
    timing = series_timing_for(library, cine)
    assert (timing.frames, timing.source) == (FRAMES, FRAME_TIME)
    path = tmp_path / "loop.mp4"
    old = os.umask(0o022)
    try:
        assert write_mp4(series_frames(library, cine), timing, path) == FRAMES
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    head = path.read_bytes()[:4096]
    moov, mdat = head.find(b"moov"), head.find(b"mdat")
    assert moov >= 0 and (mdat < 0 or moov < mdat)  # the index first: it plays while it downloads
    facts = stream_facts(path)
    stream = facts["stream"]
    assert (stream["codec_name"], stream["pix_fmt"], stream["width"], stream["height"]) == ("h264", "yuv420p",
                                                                                             SIZE, SIZE)
    assert int(stream["nb_read_frames"]) == FRAMES
    assert abs(float(facts["format"]["duration"]) - FRAMES * FRAME_S) <= FRAME_S
    assert abs(float(stream["duration"]) - FRAMES * FRAME_S) <= FRAME_S
    times = frame_times(path)
    assert len(times) == FRAMES
    assert max(abs(t - i * FRAME_S) for i, t in enumerate(times)) < 0.001
    assert_no_patient(path, facts)

    source = list(series_frames(library, cine))
    decoded = decode(path, "gray", SIZE, SIZE)
    assert decoded.shape[0] == FRAMES
    errors = [np.abs(d.astype(int) - s).mean() for d, s in zip(decoded, source, strict=True)]
    assert max(errors) < 2.0  # CRF 18: close to the source, frame by frame
    for i in (1, 45, 88):  # and in order: each decoded frame is nearer its own source than its neighbours
        own = np.abs(decoded[i].astype(int) - source[i]).mean()
        assert own < np.abs(decoded[i].astype(int) - source[i - 1]).mean()
        assert own < np.abs(decoded[i].astype(int) - source[i + 1]).mean()


def vector_loop():
    ds = cine_dataset(frames=len(VECTOR), size=64, frame_time=None, vector=VECTOR)
    timing = frame_timing(ds)
    assert timing.source == FRAME_TIME_VECTOR
    return ds, timing


def test_frame_time_vector_gives_each_frame_its_own_time(tmp_path) -> None:
    need_ffmpeg()
    ds, timing = vector_loop()
    path = tmp_path / "vector.mp4"
    assert write_mp4(dataset_frames([ds]), timing, path) == len(VECTOR)
    assert int(stream_facts(path)["stream"]["nb_read_frames"]) == len(VECTOR)
    expected = np.cumsum([0.0, *VECTOR[1:]]) / 1000  # starts: 0, 0.04, 0.12, 0.14, ...: not a constant rate
    assert np.allclose(frame_times(path), expected, atol=1e-4)
    # the last frame lasts the loop's step back to frame 0: the duration is the loop's, sum(VECTOR)
    assert abs(float(stream_facts(path)["format"]["duration"]) - sum(VECTOR) / 1000) < 1e-3


def test_apng_has_the_frames_delays_and_exact_pixels(tmp_path) -> None:
    need_ffmpeg()
    from PIL import Image

    ds, timing = vector_loop()
    path = tmp_path / "vector.png"
    assert write_apng(dataset_frames([ds]), timing, path) == len(VECTOR)
    facts = stream_facts(path)
    assert facts["stream"]["codec_name"] == "apng" and int(facts["stream"]["nb_read_frames"]) == len(VECTOR)
    steps = [*VECTOR[1:], VECTOR[0]]
    assert np.allclose(packet_durations(path), np.array(steps) / 1000, atol=1e-4)
    assert_no_patient(path, facts)
    source = list(dataset_frames([ds]))
    decoded = decode(path, "gray", 64, 64)  # FFmpeg's APNG decoder, not Pillow
    assert decoded.shape[0] == len(VECTOR)
    assert all(np.array_equal(d, s) for d, s in zip(decoded, source, strict=True))  # lossless
    with Image.open(path) as picture:  # a second reader: Pillow sees the same loop
        assert picture.n_frames == len(VECTOR) and picture.info.get("loop") == 0


def test_odd_sizes_are_padded_with_the_last_row_and_column(tmp_path) -> None:
    need_ffmpeg()
    rows, cols = 37, 45
    y, x = np.mgrid[0:rows, 0:cols]
    frames = [np.clip(40 + 4 * x + 2 * y + 5 * i, 0, 255).astype(np.uint8) for i in range(6)]  # brightest edges
    timing = uniform_timing(6, 12.5)
    path = tmp_path / "odd.mp4"
    write_mp4(frames, timing, path)
    stream = stream_facts(path)["stream"]
    assert (stream["width"], stream["height"], int(stream["nb_read_frames"])) == (46, 38, 6)
    decoded = decode(path, "gray", 38, 46).astype(int)
    for d, s in zip(decoded, frames, strict=True):
        assert np.abs(d[:rows, :cols] - s).mean() < 2.0
        assert np.abs(d[rows, :cols] - s[-1]).mean() < 3.0  # the padding repeats the last row and column
        assert np.abs(d[:rows, cols] - s[:, -1]).mean() < 3.0
    write_apng(frames, timing, tmp_path / "odd.png")  # PNG needs no padding
    assert np.array_equal(decode(tmp_path / "odd.png", "gray", rows, cols), np.array(frames))


def test_colour_frames_stay_colour(tmp_path) -> None:
    need_ffmpeg()
    frames = []
    for i in range(8):
        rgb = np.zeros((40, 64, 3), np.uint8)
        rgb[:, :, 0] = 200  # red everywhere, a moving green square
        rgb[10:30, i * 4:i * 4 + 20] = (30, 210, 40)
        frames.append(rgb)
    path = tmp_path / "colour.mp4"
    write_mp4(frames, uniform_timing(8, 25.0), path)
    decoded = decode(path, "rgb24", 40, 64).astype(int)
    assert decoded.shape[0] == 8
    assert np.abs(decoded - np.array(frames)).mean() < 4.0
    assert decoded[3, 20, 12 + 10, 1] > 150 > decoded[3, 2, 2, 1] + 100  # green square on red ground


def test_without_timing_in_the_header_the_default_rate(tmp_path, library) -> None:
    ds = cine_dataset(frames=5, size=16, frame_time=None)
    pydicom.dcmwrite(tmp_path / "plain.dcm", ds, enforce_file_format=True)
    library.store_file(tmp_path / "plain.dcm")
    timing = series_timing_for(library, ds.SeriesInstanceUID)
    assert (timing.frames, timing.source, timing.rate_fps) == (5, DEFAULT, DEFAULT_FPS)


@pytest.mark.parametrize("writer", [write_mp4, write_apng])
def test_one_frame_or_none_is_a_sentence_and_no_file(tmp_path, writer) -> None:
    timing = uniform_timing(2, 10.0)
    path = tmp_path / "none"
    with pytest.raises(ExportError, match="at least two frames; this series has only one"):
        writer([np.zeros((8, 8), np.uint8)], timing, path)
    with pytest.raises(ExportError, match="this series has no images"):
        writer([], timing, path)
    assert not path.exists()


@pytest.mark.parametrize("writer", [write_mp4, write_apng])
def test_cancel_between_frames_leaves_no_file(tmp_path, writer) -> None:
    cancel = threading.Event()

    def frames():
        for i in range(20):
            if i == 5:
                cancel.set()  # the user presses Cancel while frame 5 is being prepared
            yield np.full((16, 16), i * 10, np.uint8)

    path = tmp_path / "cancelled"
    with pytest.raises(OperationCancelled):
        writer(frames(), uniform_timing(20, 10.0), path, cancel=cancel)
    assert not path.exists()


def test_frames_of_different_sizes_are_a_sentence(tmp_path) -> None:
    frames = [np.zeros((16, 16), np.uint8), np.zeros((16, 18), np.uint8)]
    with pytest.raises(ExportError, match="differ in size"):
        write_mp4(frames, uniform_timing(2, 10.0), tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_a_movie_that_cannot_be_written_is_a_sentence(tmp_path) -> None:
    frames = [np.zeros((16, 16), np.uint8)] * 3
    with pytest.raises(ExportError, match=r"^The movie could not be written: .+\.$"):
        write_mp4(frames, uniform_timing(3, 10.0), tmp_path / "missing" / "x.mp4")
    assert not (tmp_path / "missing").exists()
