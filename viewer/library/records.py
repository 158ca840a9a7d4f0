"""What the library's index answers (no Qt): the records of a study, a series and an instance, a study search's
filters, and what storing an instance did.  Plain frozen data: :class:`viewer.library.store.Library` makes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoreResult:
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    added: bool  # False when the instance was already held (idempotent re-store)


@dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    modalities: tuple[str, ...]
    series_count: int
    instance_count: int
    issuer_of_patient_id: str = ""  # (0010,0021): the authority that assigned patient_id ("" when not said)


@dataclass(frozen=True)
class SeriesRecord:
    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    instance_count: int


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    series_uid: str
    sop_class_uid: str
    instance_number: int | None
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, float, float, float, float, float] | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    transfer_syntax_uid: str
    path: Path
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class StudyQuery:
    """Filters for :meth:`Library.studies`.  Text filters match case-insensitively anywhere ('*' and '?' are
    DICOM-style wildcards); dates are ``YYYYMMDD`` and inclusive."""

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""
