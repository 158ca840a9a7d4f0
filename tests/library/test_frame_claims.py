"""A header's Number of Frames is a claim: the index believes at most what the file can hold (issue 12: a 9 KB
file claiming 2,147,483,647 frames hung the viewer, 4 GiB and climbing, in order_frames on the GUI thread)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from viewer.dicom.demo import ct_series_datasets
from viewer.dicom.series import SeriesImages, order_frames
from viewer.errors import MifasError
from viewer.library import Library, import_paths
from viewer.library.header import FRAMES_PER_INSTANCE_MAX

ROOT = Path(__file__).resolve().parents[2]
CLAIM = 2_147_483_647


def hostile(frames: int = CLAIM) -> tuple[pydicom.Dataset, bytes]:
    ds = next(iter(ct_series_datasets(1, rows=64, cols=64, seed=3)))  # one 64x64 16-bit frame: 8 KiB of pixels
    ds.NumberOfFrames = frames
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return ds, buffer.getvalue()


@pytest.mark.parametrize("how", ["retrieved", "imported"])
def test_the_index_believes_what_the_file_can_hold(tmp_path: Path, how: str) -> None:
    ds, data = hostile()
    with Library.open(tmp_path / "library") as library:
        if how == "retrieved":
            library.store_bytes(data)
        else:
            path = tmp_path / "claim.dcm"
            path.write_bytes(data)
            assert import_paths(library, [path]).added == 1
        (record,) = library.instances(str(ds.SeriesInstanceUID))
        bound = len(data) // (64 * 64 // 8)  # at least a bit per pixel
        assert record.number_of_frames == bound  # checked before anything is built from it
        frames = order_frames([record])
        assert len(frames) == bound
        with pytest.raises(MifasError, match="too large to open"):  # a sentence, at once
            SeriesImages(frames).stored(0)


def test_an_honest_multi_frame_instance_keeps_its_frames(tmp_path: Path) -> None:
    ds, data = hostile(frames=1)
    with Library.open(tmp_path / "library") as library:
        library.store_bytes(data)
        assert library.instances(str(ds.SeriesInstanceUID))[0].number_of_frames == 1


_OLD_INDEX = f"""
import resource, dataclasses
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a regression fails here, not on the machine
from pathlib import Path
from viewer.dicom.series import order_frames
from viewer.library.store import InstanceRecord
record = InstanceRecord("1.2.3", "1.2", "1.2.840.10008.5.1.4.1.1.2", 1, None, None, {CLAIM}, 64, 64,
                        "1.2.840.10008.1.2.1", Path("x.dcm"), 9400, "")
print(len(order_frames([record])))
"""


def test_a_claim_in_an_older_index_is_bounded_too() -> None:
    done = subprocess.run([sys.executable, "-c", _OLD_INDEX], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) == FRAMES_PER_INSTANCE_MAX
