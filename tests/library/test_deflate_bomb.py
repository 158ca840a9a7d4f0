"""A deflated file that inflates to 400 MiB is indexed from its header alone (issue 12: it was inflated whole at
import, 863 MiB at the peak); what is stored is the file as it came, and the viewer refuses to open the image with
a sentence (viewer.dicom.image inflates with a bound)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from viewer.dicom.demo import ct_series_datasets

ROOT = Path(__file__).resolve().parents[2]
PIXELS_INFLATED = 400 << 20


def deflate_bomb(path: Path) -> pydicom.Dataset:
    """A Part 10 file: its header, then a Pixel Data element of 400 MiB of zeros, all deflated (~400 KB)."""
    ds = next(iter(ct_series_datasets(1, rows=64, cols=64, seed=4)))
    del ds.PixelData
    ds.Rows, ds.Columns = 10240, 10240  # 400 MiB of 16-bit pixels, as the element below holds
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as out:
        out.write(b"\0" * 128 + b"DICM")
        meta_buffer = pydicom.filebase.DicomBytesIO()
        write_file_meta_info(meta_buffer, meta, enforce_standard=True)
        out.write(meta_buffer.getvalue())
        out.write(deflater.compress(body.getvalue()))
        out.write(deflater.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, PIXELS_INFLATED)))
        zeros = bytes(1 << 20)
        for _ in range(PIXELS_INFLATED >> 20):
            out.write(deflater.compress(zeros))
        out.write(deflater.flush())
    return ds


_IMPORT = """
import json, resource, sys
from pathlib import Path
from viewer.library import Library, import_paths
with Library.open(Path(sys.argv[2])) as library:
    summary = import_paths(library, [Path(sys.argv[1])])
    records = [r for s in library.studies() for se in library.series(s.study_uid) for r in library.instances(se.series_uid)]
print(json.dumps({"added": summary.added, "failures": [f.reason for f in summary.failures],
                  "uids": [r.sop_instance_uid for r in records], "size": [r.size_bytes for r in records],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_import(path: Path, library: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _IMPORT, str(path), str(library)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_deflate_bomb_is_indexed_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.dcm"
    ds = deflate_bomb(path)
    assert path.stat().st_size < 2 << 20
    plain = tmp_path / "plain.dcm"  # the reference: the same process importing an ordinary small file
    pydicom.dcmwrite(plain, next(iter(ct_series_datasets(1, rows=64, cols=64, seed=5))), enforce_file_format=True)
    reference = run_import(plain, tmp_path / "reference")
    outcome = run_import(path, tmp_path / "library")
    assert outcome["added"] == 1 and outcome["uids"] == [str(ds.SOPInstanceUID)]
    assert outcome["size"] == [path.stat().st_size]  # stored as it came
    extra = outcome["peak_rss_mib"] - reference["peak_rss_mib"]
    print("peak RSS MiB", outcome["peak_rss_mib"], "reference", reference["peak_rss_mib"])
    assert extra < 64  # inflated whole it was +670 MiB (854 in all): the 400 MiB were inflated and copied


def test_an_ordinary_deflated_file_reads_as_pydicom_reads_it(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from viewer.library.header import read_header

    path = Path(get_testdata_file("image_dfl.dcm"))
    ours, theirs = read_header(path), pydicom.dcmread(path, stop_before_pixels=True)
    assert ours.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert [(e.tag, e.value) for e in ours] == [(e.tag, e.value) for e in theirs]
