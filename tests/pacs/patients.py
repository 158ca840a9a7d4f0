"""The studies of the prior-study tests: one patient's studies (Patient ID, its issuer, name and birth date), put
into an Orthanc of the test's own so that the test knows everything that Orthanc holds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataset import Dataset

from mifaslab.orthanc import OrthancProcess, orthanc_available
from tests.pacs.conftest import ct_series, part10
from tests.support import require


def patient_study(patient_id: str, issuer: str, date: str, *, name: str, birth: str, seed: int,
                  descriptions: Sequence[str] = ("",), slices: int = 2, size: int = 64,
                  body_part: str = "") -> list[Dataset]:
    """A CT study of one series per description (numbered from 1), `slices` images each."""
    datasets: list[Dataset] = []
    study_uid = None
    for number, description in enumerate(descriptions, start=1):
        part = ct_series(slices, rows=size, columns=size, seed=seed + number, patient_id=patient_id,
                         patient_name=name, study_date=date, series_number=number, study_uid=study_uid)
        study_uid = part[0].StudyInstanceUID
        for ds in part:
            ds.IssuerOfPatientID, ds.PatientBirthDate = issuer, birth
            if description:
                ds.SeriesDescription = description
            if body_part:
                ds.BodyPartExamined = body_part
        datasets += part
    return datasets


@contextmanager
def orthanc_holding(folder: Path, studies: Mapping[str, list[Dataset]]) -> Iterator[OrthancProcess]:
    """An Orthanc holding exactly `studies`; ``.studies`` maps their keys to Study Instance UIDs, ``.datasets`` to
    their datasets."""
    require(orthanc_available(), "Orthanc (Debian package 'orthanc') is not installed")
    with OrthancProcess(folder) as server:
        for datasets in studies.values():
            for ds in datasets:
                server.upload_bytes(part10(ds))
        server.studies = {key: str(datasets[0].StudyInstanceUID) for key, datasets in studies.items()}
        server.datasets = dict(studies)
        yield server
