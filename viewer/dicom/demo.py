"""Synthetic CT data: a demo study to explore the viewer without patient data, and a generator for tests.

:func:`demo_datasets` is a head-to-abdomen phantom built from ellipses with typical CT numbers (PS3.3 C.8.2.1:
CT pixel values rescale to Hounsfield units): air -1000, lung -850, fat -100, water/CSF ~0-10, brain ~30-40,
soft tissue/liver ~40-60, cancellous bone ~300-700, cortical bone ~1200.  Everything is deterministic,
including the UIDs, so importing the demo twice is idempotent.

UIDs are minted under the UUID-derived root ``2.25`` (PS3.5 B.2) from name-based UUIDs: fixed names give the
same UID on every machine, without squatting on an organisation's registered root.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
)

# Name-based UUIDs (ISO/IEC 9834-8 version 5) in this namespace become UIDs under 2.25 (PS3.5 B.2).
DEMO_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "demo.mifas-viewer.invalid")


def demo_uid(*names: object) -> str:
    """A fixed UID for the demo object called ``names``: ``2.25.<the name-based UUID as an integer>``."""
    return f"2.25.{uuid.uuid5(DEMO_UUID_NAMESPACE, '/'.join(map(str, names))).int}"


DEMO_STUDY_UID = demo_uid("study")
DEMO_SERIES_UID = demo_uid("series", 1)
DEMO_FRAME_OF_REFERENCE_UID = demo_uid("frame of reference")
DEMO_PATIENT_NAME = "MIFAS^Demo"
DEMO_PATIENT_ID = "DEMO-0001"
DEMO_STUDY_DESCRIPTION = "MIFAS demo CT phantom"

PIXEL_SPACING_MM = 0.9
SLICE_THICKNESS_MM = 2.0
RESCALE_INTERCEPT = -1024.0
HU_MIN, HU_MAX = -1024, 3071  # the 12-bit CT range after rescale
DEMO_SIZE_MAX = 1024  # bounds the demo's memory: 1024 x 1024 x 2 bytes per slice
DEMO_SLICES_MAX = 1000

# Hounsfield units of the phantom's materials.
AIR, LUNG, FAT, CSF, WHITE_MATTER, GREY_MATTER = -1000.0, -850.0, -100.0, 8.0, 28.0, 38.0
MUSCLE, BLOOD, LIVER, SPLEEN, KIDNEY = 50.0, 42.0, 62.0, 48.0, 32.0
CANCELLOUS_BONE, CORTICAL_BONE, SKIN = 350.0, 1200.0, 20.0


@dataclass(frozen=True)
class _Grid:
    """Normalised in-plane coordinates: u left-to-right and v anterior-to-posterior, both in -1..1."""

    u: np.ndarray
    v: np.ndarray

    def ellipse(self, cu: float, cv: float, a: float, b: float) -> np.ndarray:
        if a <= 0 or b <= 0:
            return np.zeros(self.u.shape, dtype=bool)
        return ((self.u - cu) / a) ** 2 + ((self.v - cv) / b) ** 2 <= 1.0


def _profile(t: float, start: float, end: float) -> float:
    """A smooth 0..1..0 bump over [start, end] (the cross-section of an ellipsoid along z)."""
    if not start < t < end:
        return 0.0
    x = (2.0 * t - start - end) / (end - start)
    return float(np.sqrt(1.0 - x * x))


def _head(g: _Grid, t: float, hu: np.ndarray) -> None:
    """Skull ring with scalp, grey and white matter, ventricles and, low down, air in the sinuses."""
    s = _profile(t, -0.02, 0.40)
    if s == 0.0:
        return
    a, b = 0.55 * s, 0.68 * s
    hu[g.ellipse(0, 0, a + 0.03, b + 0.03)] = SKIN
    hu[g.ellipse(0, 0, a, b)] = CORTICAL_BONE
    hu[g.ellipse(0, 0, a - 0.05, b - 0.05)] = GREY_MATTER
    hu[g.ellipse(0, 0.02, 0.7 * (a - 0.05), 0.7 * (b - 0.05))] = WHITE_MATTER
    ventricles = _profile(t, 0.10, 0.25)
    if ventricles:
        for side in (-1, 1):
            hu[g.ellipse(side * 0.07, -0.02, 0.05 * ventricles, 0.22 * ventricles)] = CSF
    sinuses = _profile(t, 0.26, 0.40)
    if sinuses:
        for side in (-1, 1):
            hu[g.ellipse(side * 0.12, -0.42 * s, 0.09 * sinuses, 0.07 * sinuses)] = AIR
        hu[g.ellipse(0, -0.50 * s, 0.05 * sinuses, 0.05 * sinuses)] = AIR


def _vertebra(g: _Grid, cv: float, size: float, hu: np.ndarray) -> None:
    hu[g.ellipse(0, cv, 0.11 * size, 0.09 * size)] = CORTICAL_BONE
    hu[g.ellipse(0, cv, 0.09 * size, 0.07 * size)] = CANCELLOUS_BONE
    hu[g.ellipse(0, cv + 0.13 * size, 0.045 * size, 0.04 * size)] = CORTICAL_BONE  # posterior arch
    hu[g.ellipse(0, cv + 0.13 * size, 0.03 * size, 0.025 * size)] = CSF  # spinal canal


def _neck(g: _Grid, t: float, hu: np.ndarray) -> None:
    s = _profile(t, 0.33, 0.56)
    if s == 0.0:
        return
    hu[g.ellipse(0, 0.05, 0.28 * s + 0.02, 0.24 * s + 0.02)] = SKIN
    hu[g.ellipse(0, 0.05, 0.27 * s, 0.23 * s)] = MUSCLE
    hu[g.ellipse(0, -0.10 * s, 0.05, 0.045)] = AIR  # trachea


def _body(g: _Grid, t: float, z_phase: float, hu: np.ndarray) -> None:
    """Thorax (lungs, heart, ribs) running into the abdomen (liver, spleen, kidneys, bowel gas)."""
    s = _profile(t, 0.42, 1.7) ** 0.5  # shoulders widen quickly, then the trunk is nearly constant
    if s == 0.0:
        return
    a, b = 0.86 * s, 0.60 * s
    hu[g.ellipse(0, 0.05, a + 0.015, b + 0.015)] = SKIN
    hu[g.ellipse(0, 0.05, a, b)] = FAT
    hu[g.ellipse(0, 0.05, a - 0.07, b - 0.07)] = MUSCLE
    lungs = _profile(t, 0.48, 0.74)
    if lungs:
        for side in (-1, 1):
            hu[g.ellipse(side * 0.36 * s, 0.02, 0.30 * lungs * s, 0.40 * lungs * s)] = LUNG
        hu[g.ellipse(0.08, -0.10, 0.22 * lungs, 0.20 * lungs)] = BLOOD  # heart
        if np.sin(z_phase) > -0.2:  # ribs come and go as the slices cut them
            ring = g.ellipse(0, 0.05, a - 0.08, b - 0.08) & ~g.ellipse(0, 0.05, a - 0.11, b - 0.11)
            spokes = np.cos(10 * np.arctan2(g.v - 0.05, g.u) + z_phase) > 0.55
            hu[ring & spokes] = CORTICAL_BONE
    liver = _profile(t, 0.62, 0.86)
    if liver:
        hu[g.ellipse(-0.32 * s, -0.02, 0.38 * liver * s, 0.40 * liver * s)] = LIVER
        hu[g.ellipse(0.45 * s, 0.12, 0.14 * liver, 0.22 * liver)] = SPLEEN
        hu[g.ellipse(0.22, -0.18, 0.16 * liver, 0.12 * liver)] = CSF  # stomach fluid
        hu[g.ellipse(0.22, -0.24, 0.12 * liver, 0.05 * liver)] = AIR  # gas floats anteriorly
    kidneys = _profile(t, 0.74, 0.92)
    if kidneys:
        for side in (-1, 1):
            hu[g.ellipse(side * 0.26, 0.28, 0.09 * kidneys, 0.13 * kidneys)] = KIDNEY
    bowel = _profile(t, 0.84, 1.2)
    if bowel:
        for k in range(5):
            angle = 1.3 * k + 0.8 * z_phase
            cu, cv = 0.35 * np.cos(angle) * s, -0.15 + 0.18 * np.sin(angle)
            hu[g.ellipse(cu, cv, 0.06 * bowel, 0.045 * bowel)] = AIR
    hu[g.ellipse(0.06, _spine_v(t) - 0.15, 0.045, 0.045)] = BLOOD  # aorta, left and anterior of the spine


def _spine_v(t: float) -> float:
    """The vertebrae sit just behind the neck's centre and move back as the trunk deepens."""
    return 0.08 + 0.2 * min(max((t - 0.45) / 0.15, 0.0), 1.0)


def _spine(g: _Grid, t: float, hu: np.ndarray) -> None:
    if t > 0.36:
        _vertebra(g, _spine_v(t), 1.0, hu)


def demo_volume_hu(slices: int = 120, size: int = 256) -> np.ndarray:
    """The phantom as Hounsfield units, ``(slices, size, size)`` int16; slice 0 is the top of the head."""
    if not (1 <= slices <= DEMO_SLICES_MAX and 16 <= size <= DEMO_SIZE_MAX):
        raise ValueError(f"demo phantom: slices must be 1..{DEMO_SLICES_MAX} and size 16..{DEMO_SIZE_MAX}")
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    g = _Grid(*np.meshgrid(axis, axis * 1.0, indexing="xy"))
    rng = np.random.default_rng(20240917)  # fixed: the demo is the same everywhere
    volume = np.empty((slices, size, size), dtype=np.int16)
    hu = np.empty((size, size), dtype=np.float32)
    for i in range(slices):
        t = (i + 0.5) / slices
        z_phase = i * SLICE_THICKNESS_MM / 7.0  # ribs repeat every ~44 mm
        hu.fill(AIR)
        _body(g, t, z_phase, hu)
        _neck(g, t, hu)
        _spine(g, t, hu)
        _head(g, t, hu)
        noise = rng.standard_normal(hu.shape, dtype=np.float32) * 8.0
        noise[hu <= AIR] *= 0.25  # little noise in air, as after a real reconstruction
        np.clip(hu + noise, HU_MIN, HU_MAX, out=hu)
        volume[i] = np.rint(hu)
    return volume


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MIFAS_VIEWER"
    return meta


@dataclass(frozen=True)
class _Identity:
    """Who and what a generated series claims to be (never a real patient)."""

    patient_name: str
    patient_id: str
    study_description: str
    series_description: str


DEMO_IDENTITY = _Identity(DEMO_PATIENT_NAME, DEMO_PATIENT_ID, DEMO_STUDY_DESCRIPTION, "Axial 2 mm")


def _ct_slice(*, stored: np.ndarray, identity: _Identity, sop_instance_uid: str, study_uid: str, series_uid: str,
              frame_of_reference_uid: str, instance_number: int, z_mm: float, spacing_mm: float,
              thickness_mm: float, transfer_syntax: str) -> FileDataset:
    """One CT Image Storage instance (PS3.3 A.3) holding int16 stored values with intercept -1024."""
    rows, cols = stored.shape
    meta = _file_meta(CTImageStorage, sop_instance_uid, transfer_syntax)
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "MIFAS"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = identity.study_description
    ds.SeriesDescription = identity.series_description
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "WHOLEBODY"
    ds.SliceThickness = f"{thickness_mm:g}"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [f"{-cols * spacing_mm / 2:g}", f"{-rows * spacing_mm / 2:g}", f"{z_mm:g}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z_mm:g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [f"{spacing_mm:g}", f"{spacing_mm:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    stored = np.ascontiguousarray(stored, dtype=np.int16)
    if UID(transfer_syntax) == ExplicitVRBigEndian:
        ds.PixelData = stored.astype(">i2").tobytes()
    elif UID(transfer_syntax).is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = stored.tobytes()
        ds.compress(transfer_syntax, stored)
    else:
        ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def demo_datasets(slices: int = 120, size: int = 256) -> Iterator[FileDataset]:
    """The demo study: one axial CT series of the phantom, head first, 2 mm slices (Explicit VR LE)."""
    volume = demo_volume_hu(slices, size)
    for i in range(slices):
        yield _ct_slice(
            stored=volume[i] - np.int16(RESCALE_INTERCEPT),
            identity=DEMO_IDENTITY,
            sop_instance_uid=demo_uid("instance", i + 1),
            study_uid=DEMO_STUDY_UID,
            series_uid=DEMO_SERIES_UID,
            frame_of_reference_uid=DEMO_FRAME_OF_REFERENCE_UID,
            instance_number=i + 1,
            z_mm=-i * SLICE_THICKNESS_MM,  # head first: superior (+z) to inferior
            spacing_mm=PIXEL_SPACING_MM,
            thickness_mm=SLICE_THICKNESS_MM,
            transfer_syntax=ExplicitVRLittleEndian,
        )


def ct_series_datasets(n_slices: int, rows: int = 512, cols: int = 512, *, seed: int = 0,
                       study_uid: str | None = None, series_uid: str | None = None,
                       transfer_syntax: str = ExplicitVRLittleEndian) -> Iterator[FileDataset]:
    """A CT series of ``n_slices`` random-ish but deterministic (given ``seed``) int16 slices, for tests and
    benchmarks: a noisy body ellipse with a bone disc that moves with z.  Instance numbers 1..n, positions
    1.25 mm apart, UIDs derived from ``seed`` unless given.  A compressed ``transfer_syntax`` needs an
    installed encoder (pydicom's RLE; pylibjpeg-openjpeg for JPEG 2000)."""
    study_uid = study_uid or demo_uid("test study", seed)
    series_uid = series_uid or demo_uid("test series", seed, study_uid)
    frame_of_reference_uid = demo_uid("test frame of reference", seed, series_uid)
    identity = _Identity("MIFAS^Test", f"TEST-{seed:04d}", "MIFAS synthetic CT series", f"Synthetic seed {seed}")
    v, u = np.mgrid[-1.0:1.0:complex(0, rows), -1.0:1.0:complex(0, cols)]
    body = (u / 0.85) ** 2 + (v / 0.65) ** 2 <= 1.0
    for i in range(n_slices):
        rng = np.random.default_rng([seed, i])
        hu = np.where(body, 40, -1000).astype(np.int16)
        hu += rng.integers(-30, 31, size=(rows, cols), dtype=np.int16)
        angle = 0.1 * i
        bone = ((u - 0.3 * np.cos(angle)) / 0.15) ** 2 + ((v - 0.3 * np.sin(angle)) / 0.15) ** 2 <= 1.0
        hu[bone] = 900
        yield _ct_slice(
            stored=hu - np.int16(RESCALE_INTERCEPT),
            identity=identity,
            sop_instance_uid=demo_uid("test instance", seed, series_uid, i),
            study_uid=study_uid,
            series_uid=series_uid,
            frame_of_reference_uid=frame_of_reference_uid,
            instance_number=i + 1,
            z_mm=i * 1.25,
            spacing_mm=0.7,
            thickness_mm=1.25,
            transfer_syntax=transfer_syntax,
        )
