"""Series layout from the library index, and the lazily decoded, bounded frame cache."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

from viewer.dicom import image as image_module
from viewer.dicom.demo import ct_series_datasets
from viewer.dicom.series import FrameRef, SeriesImages, order_frames, priority_order
from viewer.errors import MalformedDicomError, NotDicomError, OperationCancelled
from viewer.library.store import InstanceRecord

from .conftest import image_dataset, write


def record(uid: str, *, position=None, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), number=None, frames=1,
           path: str | None = None) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=uid, series_uid="1.2.3", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=number, image_position=position, image_orientation=orientation,
        number_of_frames=frames, rows=4, columns=4, transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=Path(path or f"/nonexistent/{uid}.dcm"), size_bytes=0, sha256="",
    )


# -- order_frames ----------------------------------------------------------------------------------------------


def test_axial_slices_are_sorted_by_position_not_by_number_or_input_order():
    # Instance numbers deliberately disagree with the geometry.
    records = [record(f"1.{k}", position=(0.0, 0.0, 2.5 * k), number=100 - k) for k in range(40)]
    shuffled = records[:]
    random.Random(5).shuffle(shuffled)
    frames = order_frames(shuffled)
    assert [f.sop_instance_uid for f in frames] == [r.sop_instance_uid for r in records]
    assert frames[3].position == (0.0, 0.0, 7.5) and frames[3].frame_index == 0
    assert frames[3].instance_number == 97 and frames[3].path == Path("/nonexistent/1.3.dcm")


def test_oblique_slices_are_sorted_along_the_normal():
    c, s = np.cos(0.4), np.sin(0.4)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, c, s])  # columns tilted about x
    normal = np.cross(row, col)
    # Slice k lies 3 mm * k along the normal; in-plane shifts (which do not change the order) vary wildly,
    # and the z coordinate alone would give a different order.
    records = [record(f"2.{k}", position=tuple(float(v) for v in normal * 3 * k + row * 50 * (-1) ** k
                                               + col * 40 * (k % 3)),
                      orientation=(*row, *col)) for k in range(10)]
    by_z = sorted(records, key=lambda r: r.image_position[2])
    assert by_z != records
    assert [f.sop_instance_uid for f in order_frames(records[::-1])] == [r.sop_instance_uid for r in records]


def test_mixed_orientations_fall_back_to_instance_number():
    records = [record("3.1", position=(0, 0, 9), number=2),
               record("3.2", position=(0, 0, 1), number=1, orientation=(0, 1, 0, 0, 0, -1)),
               record("3.3", position=(0, 0, 5), number=None),
               record("3.4", position=(0, 0, 3), number=3)]
    assert [f.sop_instance_uid for f in order_frames(records)] == ["3.2", "3.1", "3.4", "3.3"]


def test_missing_positions_fall_back_to_instance_number():
    records = [record("4.1", position=None, number=3), record("4.2", position=(0, 0, 0), number=1),
               record("4.3", position=(0, 0, 1), number=2)]
    assert [f.sop_instance_uid for f in order_frames(records)] == ["4.2", "4.3", "4.1"]


def test_multi_frame_instances_expand_to_one_ref_per_frame():
    frames = order_frames([record("5.1", number=2, frames=3, position=None), record("5.2", number=1)])
    assert [(f.sop_instance_uid, f.frame_index) for f in frames] == [("5.2", 0), ("5.1", 0), ("5.1", 1), ("5.1", 2)]
    assert frames[1].position is None
    assert order_frames([]) == []


def test_order_frames_opens_no_file():
    # The paths do not exist: ordering must work from the index alone.
    assert len(order_frames([record(f"6.{k}", position=(0, 0, k)) for k in range(5)])) == 5


# -- priority_order ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 7, 100])
def test_priority_order_is_a_permutation_starting_first_middle_last(n):
    order = priority_order(n)
    assert sorted(order) == list(range(n))
    if n >= 3:
        assert order[:3] == [0, n // 2, n - 1]
        assert order[3:] == sorted(order[3:])  # outward from the first


def test_priority_order_from_the_viewed_frame_spreads_outward():
    order = priority_order(10, start=6)
    assert order[:4] == [6, 0, 5, 9]
    assert order[4:] == [7, 8, 4, 3, 2, 1]  # 7 (5 was taken), 8, 4, (9 taken) 3, 2, 1
    assert sorted(order) == list(range(10))


# -- SeriesImages --------------------------------------------------------------------------------------------


@pytest.fixture
def ct_series(tmp_path) -> tuple[list[FrameRef], list[np.ndarray]]:
    """Six 32 x 32 CT slices on disk, ordered."""
    refs, pixels = [], []
    for k, ds in enumerate(ct_series_datasets(6, 32, 32, seed=9)):
        path = write(ds, tmp_path / f"ct{k}.dcm")
        refs.append(FrameRef(path, 0, ds.SOPInstanceUID, tuple(float(v) for v in ds.ImagePositionPatient), k + 1))
        pixels.append(np.frombuffer(ds.PixelData, "<i2").reshape(32, 32))
    return refs, pixels


def test_stored_decodes_on_demand_and_caches(ct_series):
    refs, pixels = ct_series
    series = SeriesImages(refs)
    assert len(series) == 6 and series.loaded_count() == 0 and not series.is_loaded(2)
    np.testing.assert_array_equal(series.stored(2), pixels[2])
    assert series.is_loaded(2) and series.loaded_count() == 1
    assert series.stored(2) is series.stored(2)
    assert series.info(2).rescale_intercept == -1024.0
    assert "PixelData" not in series.header(2)
    assert series.header(2).SOPInstanceUID == refs[2].sop_instance_uid


def test_info_reads_only_the_header(ct_series):
    refs, _ = ct_series
    series = SeriesImages(refs)
    assert series.info(4).rows == 32 and series.loaded_count() == 0


def test_cache_is_bounded_in_bytes_with_lru_eviction(ct_series):
    refs, pixels = ct_series
    frame_bytes = 32 * 32 * 2
    series = SeriesImages(refs, cache_bytes_max=3 * frame_bytes)
    for k in (0, 1, 2):
        series.stored(k)
    series.stored(0)  # 0 is now the most recent
    series.stored(3)  # evicts 1, the least recently used
    assert [series.is_loaded(k) for k in range(4)] == [True, False, True, True]
    assert series.cache_bytes == 3 * frame_bytes
    np.testing.assert_array_equal(series.stored(1), pixels[1])  # decoded again


def test_pipeline_is_shared_between_frames_with_the_same_parameters(ct_series):
    refs, _ = ct_series
    series = SeriesImages(refs)
    assert series.pipeline(0) is series.pipeline(5)
    rendered = series.pipeline(0).render(series.stored(0))
    assert rendered.dtype == np.uint8 and rendered.shape == (32, 32)


def test_errors_are_remembered_and_not_retried(ct_series, tmp_path, monkeypatch):
    refs, _ = ct_series
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"")
    refs = [*refs[:2], FrameRef(bad, 0, "9.9", None, None), *refs[2:]]
    calls = []
    real_open = image_module.DicomImage.open.__func__

    def counting_open(cls, path, **kwargs):
        calls.append(Path(path))
        return real_open(cls, path, **kwargs)

    monkeypatch.setattr(image_module.DicomImage, "open", classmethod(counting_open))
    series = SeriesImages(refs)
    for _ in range(3):
        with pytest.raises(NotDicomError):
            series.stored(2)
    assert calls.count(bad) == 1
    assert isinstance(series.error(2), NotDicomError)
    np.testing.assert_array_equal(series.stored(3).shape, (32, 32))  # the others still load


def test_preload_decodes_in_order_reports_progress_and_cancels(ct_series):
    refs, _ = ct_series
    series = SeriesImages(refs)
    seen = []
    done = series.preload(priority_order(len(series)), threading.Event(), lambda d, t: seen.append((d, t)))
    assert done == 6 and series.loaded_count() == 6
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == list(range(1, 7))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled):
        SeriesImages(refs).preload(range(6), cancel)


def test_preload_stops_when_the_cache_is_full(ct_series):
    refs, _ = ct_series
    series = SeriesImages(refs, cache_bytes_max=2 * 32 * 32 * 2)
    series.preload(range(6), threading.Event())
    assert series.loaded_count() == 2 and series.is_loaded(0) and series.is_loaded(1)


def test_concurrent_readers_get_the_same_pixels(ct_series):
    refs, pixels = ct_series
    series = SeriesImages(refs)
    failures: list[BaseException] = []

    def reader(offset: int) -> None:
        try:
            for k in range(60):
                i = (k + offset) % 6
                np.testing.assert_array_equal(series.stored(i), pixels[i])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_multi_frame_instance_is_decoded_once_for_all_its_frames(tmp_path, monkeypatch):
    frames = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    path = write(image_dataset(frames), tmp_path / "mf.dcm")
    rec = record(pydicom.dcmread(path).SOPInstanceUID, frames=4, path=str(path))
    refs = order_frames([rec])
    calls = []
    real_open = image_module.DicomImage.open.__func__
    monkeypatch.setattr(image_module.DicomImage, "open",
                        classmethod(lambda cls, p, **kw: calls.append(p) or real_open(cls, p, **kw)))
    series = SeriesImages(refs)
    for k in range(4):
        np.testing.assert_array_equal(series.stored(k), frames[k])
    assert len(calls) == 1


def test_frame_index_beyond_the_instance_is_an_error(tmp_path):
    path = write(image_dataset(np.zeros((4, 4), np.uint16)), tmp_path / "one.dcm")
    series = SeriesImages([FrameRef(path, 3, "1.2", None, None)])
    with pytest.raises(MalformedDicomError):
        series.stored(0)
