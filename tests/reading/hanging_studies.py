"""Generated studies for the hanging-protocol tests (pydicom, no Qt): small images with the modality, series
description, body part, view position, laterality and patient orientation a protocol looks at, stored in a
library; plus reading objects (PR, KO) that must never be hung."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.ui.conftest import ct_dataset

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}
KO_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
PR_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


@dataclass
class Study:
    uid: str = field(default_factory=generate_uid)
    frame: str = field(default_factory=generate_uid)
    series: dict[str, str] = field(default_factory=dict)  # name: series UID
    instances: dict[str, str] = field(default_factory=dict)  # name: SOP Instance UID (projection images)
    number: int = 0


def add_series(library, study: Study, name: str, modality: str, description: str, *, n: int = 4,
               body_part: str = "", image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
               z0: float = 0.0, spacing: float = 2.5, study_description: str = "") -> str:
    """A series of `n` parallel axial slices (z0, z0 + spacing, ...) in the study's frame of reference."""
    study.number += 1
    series_uid = generate_uid()
    for i in range(n):
        ds = ct_dataset(i, n, rows=16, cols=16, study_uid=study.uid, series_uid=series_uid)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.StudyDescription = study_description
        ds.SeriesNumber = study.number
        ds.FrameOfReferenceUID = study.frame
        ds.ImagePositionPatient = [0.0, 0.0, z0 + spacing * i]
        ds.ImageType = list(image_type)
        if body_part:
            ds.BodyPartExamined = body_part
        library.store_dataset(ds)
    study.series[name] = series_uid
    return series_uid


def add_projection(library, study: Study, series_name: str, modality: str, views: dict[str, tuple], *,
                   description: str = "", body_part: str = "") -> str:
    """One series of projection images: views = {name: (ViewPosition, laterality, PatientOrientation)}."""
    study.number += 1
    series_uid = generate_uid()
    for i, (name, (view, laterality, orientation)) in enumerate(views.items()):
        ds = ct_dataset(i, len(views), rows=16, cols=16, study_uid=study.uid, series_uid=series_uid)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.SeriesNumber = study.number
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "RescaleType"):
            delattr(ds, keyword)
        ds.ViewPosition = view
        if laterality:
            ds.ImageLaterality = laterality
        ds.PatientOrientation = list(orientation)
        if body_part:
            ds.BodyPartExamined = body_part
        library.store_dataset(ds)
        study.instances[name] = ds.SOPInstanceUID
    study.series[series_name] = series_uid
    return series_uid


def add_reading_object(library, study: Study, name: str, modality: str) -> str:
    """A Key Object Selection (KO) or Presentation State (PR) saved into the study: not an image."""
    study.number += 1
    sop_class = KO_CLASS if modality == "KO" else PR_CLASS
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, study.number, 1
    ds.SeriesDescription = "Lung reading"  # a name a lung rule would like: still never hung
    ds.PatientName, ds.PatientID = "Test^Patient", "UI-0001"
    library.store_dataset(ds)
    study.series[name] = ds.SeriesInstanceUID
    return ds.SeriesInstanceUID


def chest_ct(library, *, z0: float = 0.0, lung: str = "Lung 1mm") -> Study:
    """A chest CT: a localizer, a mediastinal and a lung series, a bone series, and a saved KO."""
    study = Study()
    add_series(library, study, "scout", "CT", "Topogram", n=1, body_part="CHEST",
               image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    add_series(library, study, "mediastinum", "CT", "Mediastinum 5mm", body_part="CHEST", z0=z0)
    add_series(library, study, "lung", "CT", lung, body_part="CHEST", z0=z0)
    add_series(library, study, "bone", "CT", "Bone 2mm", body_part="CHEST", z0=z0)
    add_reading_object(library, study, "ko", "KO")
    add_reading_object(library, study, "pr", "PR")
    return study


def brain_mr(library, *, with_dwi: bool = True) -> Study:
    study = Study()
    add_series(library, study, "localizer", "MR", "localizer", n=1, body_part="BRAIN",
               image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    add_series(library, study, "flair", "MR", "Ax T2 FLAIR", body_part="BRAIN")
    add_series(library, study, "t2", "MR", "Ax T2 TSE", body_part="BRAIN")
    add_series(library, study, "t1", "MR", "Sag T1 SE", body_part="BRAIN")
    if with_dwi:
        add_series(library, study, "dwi", "MR", "DWI b1000 TRACE", body_part="BRAIN")
        add_series(library, study, "adc", "MR", "DWI ADC", body_part="BRAIN")
    return study


def chest_radiograph(library) -> Study:
    """The lateral first (the protocol must order by View Position, not by instance number)."""
    study = Study()
    add_projection(library, study, "views", "CR", {"lateral": ("LL", "", ("P", "F")), "pa": ("PA", "", ("L", "F"))},
                   description="Thorax", body_part="CHEST")
    return study


def mammography(library) -> Study:
    """Four views in one series, stored in a shuffled order.  Right-breast images have the chest wall on their
    left edge (rows run toward A); left-breast images too: so the mirror-image hanging flips the right ones."""
    study = Study()
    add_projection(library, study, "views", "MG", {
        "LMLO": ("MLO", "L", ("A", "FR")), "RCC": ("CC", "R", ("A", "L")), "RMLO": ("MLO", "R", ("A", "FL")),
        "LCC": ("CC", "L", ("A", "R"))}, description="Screening")
    return study
