"""Real peers for the PACS tests: one Orthanc for the session (DICOM, REST, DICOMweb), seeded with small CT
studies made here and with compressed files from pydicom's bundled test data.

Every DCMTK-based process gets TCP_NODELAY=1 (see shared/MACHINE-NOTES.md).  Nothing here depends on
viewer.dicom: the tiny CT generator below is the test's own.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, OrthancProcess, free_port
from tests.pacs.scripted import serve_once
from tests.support import require
from viewer.pacs.node import Node, Timeouts

CALLING_AE = "MIFASTEST"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
# Compressed (and one deflated) files from pydicom's own test data, with distinct SOP Instance UIDs.
PYDICOM_FILES = (
    "CT_small.dcm",  # Explicit VR Little Endian, CT
    "MR_small_RLE.dcm",  # RLE Lossless, MR
    "JPEG2000.dcm",  # JPEG 2000, secondary capture
    "JPEG-lossy.dcm",  # JPEG Extended (12-bit lossy)
    "examples_jpeg2k.dcm",  # JPEG 2000 Lossless, ultrasound
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline, colour
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1, colour
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "693_J2KI.dcm",  # JPEG 2000, CT
)


def ct_series(
    count: int,
    *,
    rows: int = 64,
    columns: int = 64,
    seed: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_name: str = "Test^Phantom",
    patient_id: str = "MIFAS-T1",
    study_date: str = "20240315",
    series_number: int = 1,
) -> list[Dataset]:
    """A small CT series with deterministic random 16-bit pixels, as datasets ready to be written (Part 10)."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    datasets = []
    for index in range(count):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.AccessionNumber = f"ACC{seed:04d}"
        ds.StudyDescription = "MIFAS test CT"
        ds.Modality = "CT"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = f"axial {series_number}"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * 2.5]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(-1024, 3000, (rows, columns), dtype=np.int16).tobytes()
        datasets.append(ds)
    return datasets


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Seed:
    """What the session's Orthanc holds, by SOP Instance UID, with the bytes we uploaded."""

    files: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> Part 10 bytes as uploaded
    ct_study: str = ""  # one series, 31 slices (the priority-order and cancel tests use it)
    ct_series: str = ""
    two_series_study: str = ""  # two series of 5
    two_series: tuple[str, str] = ("", "")
    pydicom_studies: dict[str, str] = field(default_factory=dict)  # file name -> Study Instance UID

    def study_uids(self) -> set[str]:
        return {self.ct_study, self.two_series_study, *self.pydicom_studies.values()}

    def instances_of(self, study_uid: str) -> set[str]:
        return {uid for uid, data in self.files.items()
                if pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID == study_uid}


@pytest.fixture(scope="session")
def seed_data() -> Seed:
    seed = Seed()
    ct = ct_series(31, seed=1)
    seed.ct_study, seed.ct_series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    study_uid = generate_uid()
    first = ct_series(5, seed=2, study_uid=study_uid, patient_name="Other^Person", patient_id="MIFAS-T2",
                      study_date="20230101", series_number=1)
    second = ct_series(5, seed=3, study_uid=study_uid, patient_name="Other^Person", patient_id="MIFAS-T2",
                       study_date="20230101", series_number=2)
    seed.two_series_study = study_uid
    seed.two_series = (first[0].SeriesInstanceUID, second[0].SeriesInstanceUID)
    for ds in (*ct, *first, *second):
        seed.files[str(ds.SOPInstanceUID)] = part10(ds)
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)
        assert path is not None, f"pydicom test file {name} is missing"
        data = Path(path).read_bytes()
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        seed.files[str(header.SOPInstanceUID)] = data
        seed.pydicom_studies[name] = str(header.StudyInstanceUID)
    return seed


@pytest.fixture(scope="session")
def move_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory, seed_data: Seed, move_port: int) -> Iterator[OrthancProcess]:
    """One Orthanc for the session; it rejects associations addressed to another AE title, and knows our AE
    title as a C-MOVE destination on `move_port`."""
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    require(DICOMWEB_PLUGIN.exists(), "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    process = OrthancProcess(
        tmp_path_factory.mktemp("orthanc"), aet="ORTHANCT", check_called_aet=True, remote_access=False,
        modalities={"mifas": (CALLING_AE, "127.0.0.1", move_port)},
    )
    with process:
        for data in seed_data.files.values():
            process.upload_bytes(data)
        yield process


@pytest.fixture
def node(orthanc: OrthancProcess) -> Node:
    return orthanc.node(calling_ae=CALLING_AE, timeouts=Timeouts(connect_s=2, acse_s=5, dimse_s=10, network_s=20))


def dcmtk(tool: str) -> str:
    """The absolute path of a DCMTK tool (the venv's pynetdicom installs scripts with the same names)."""
    path = f"/usr/bin/{tool}"
    require(os.path.exists(path) and shutil.which(path) is not None, f"DCMTK's {tool} is not installed (apt-get install dcmtk)")
    return path


@pytest.fixture
def scripted_peer() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start one-connection TCP peers running `script(conn)` (tests.pacs.scripted.serve_once); returns the port."""
    servers: list[tuple[socket.socket, threading.Thread]] = []

    def start(script: Callable[[socket.socket], None]) -> int:
        server, thread = serve_once(script)
        servers.append((server, thread))
        return int(server.getsockname()[1])

    yield start
    for server, thread in servers:
        server.close()
        thread.join(timeout=10)
