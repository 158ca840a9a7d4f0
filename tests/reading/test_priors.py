"""The prior-study matching rule, the merge of places, and the relevance order (viewer.reading.priors): no Qt, no
network; the library is a real one, the PACS sources are plain finders (the Orthanc test is
tests/pacs/test_priors_orthanc.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.pacs.conftest import ct_series, part10
from viewer.errors import NodeUnreachableError, PacsError
from viewer.library import Library
from viewer.reading.priors import (
    CONFIRM,
    PRIOR,
    Patient,
    SeriesInfo,
    Source,
    classify,
    find_priors,
    relevance_order,
)

DOE = Patient("ID-1", "HOSP-A", "Doe^John", "19600101")


@pytest.mark.parametrize(("other", "expected"), [
    (Patient("ID-1", "HOSP-A", "Doe^John", "19600101"), PRIOR),
    (Patient(" ID-1 ", "HOSP-A ", "", ""), PRIOR),  # DICOM padding aside; the name plays no part for a prior
    (Patient("ID-1", "HOSP-A", "Smith^Ann", "19990101"), PRIOR),  # same ID and issuer: renamed, still the patient
    (Patient("ID-2", "HOSP-A", "Doe^John", "19600101"), None),  # homonym: same name (and birth date), other ID
    (Patient("ID-2", "HOSP-A", "DOE^JOHN", "19710101"), None),  # homonym
    (Patient("X-77", "HOSP-B", "DOE^JOHN^^", "19600101"), CONFIRM),  # other issuer, same name and birth date
    (Patient("ID-1", "HOSP-B", "Doe^John", "19600101"), CONFIRM),  # same ID, other issuer: still to confirm
    (Patient("ID-1", "HOSP-B", "Doe^Jane", "19600101"), None),  # same ID, other issuer, other name
    (Patient("X-77", "HOSP-B", "Doe^John", ""), None),  # no birth date: never on the name alone
    (Patient("ID-1", "", "Doe^John", "19600101"), CONFIRM),  # an empty issuer is not HOSP-A
])
def test_the_matching_rule(other: Patient, expected: str | None) -> None:
    assert classify(DOE, other) == expected


def test_an_empty_issuer_matches_only_an_empty_issuer() -> None:
    bare = Patient("ID-1", "", "Doe^John", "19600101")
    assert classify(bare, Patient("ID-1", "", "x", "")) == PRIOR
    assert classify(bare, Patient("ID-1", "HOSP-A", "x", "")) is None
    assert classify(bare, Patient("ID-2", "", "Doe^John", "19600101")) is None  # a homonym, issuer or not


def test_a_study_without_patient_id_has_no_priors(tmp_path: Path) -> None:
    assert classify(Patient("", "", "Doe^John", "19600101"), Patient("", "", "Doe^John", "19600101")) is None
    with Library.open(tmp_path / "lib") as library:
        result = find_priors("1.2.3", Patient("", "", "Doe^John", "19600101"), library)
    assert result.priors == [] and result.notes == ["This study has no Patient ID: its priors cannot be matched."]


def _store(library: Library, *, patient_id: str, issuer: str, name: str = "Doe^John", birth: str = "19600101",
           date: str = "20240101", description: str = "CT chest") -> str:
    datasets = ct_series(1, patient_id=patient_id, patient_name=name, study_date=date)
    for ds in datasets:
        ds.IssuerOfPatientID = issuer
        ds.PatientBirthDate = birth
        ds.StudyDescription = description
        library.store_bytes(part10(ds))
    return str(datasets[0].StudyInstanceUID)


class Finder:
    """A PACS source's answers, as a ResilientClient.find gives them (keys echoed, values of the matches)."""

    def __init__(self, matches: list[dict[str, str]], error: Exception | None = None) -> None:
        self.matches, self.error, self.asked = matches, error, []

    def find(self, level, keys=None, *, cancel=None, limit=1000):
        self.asked.append(dict(keys or {}))
        if self.error is not None:
            raise self.error
        return [m for m in self.matches if all(not v or m.get(k) == v for k, v in (keys or {}).items())]


def _match(uid: str, patient_id: str, issuer: str, date: str, name: str = "Doe^John",
           birth: str = "19600101") -> dict[str, str]:
    return {"StudyInstanceUID": uid, "PatientID": patient_id, "IssuerOfPatientID": issuer, "PatientName": name,
            "PatientBirthDate": birth, "StudyDate": date, "StudyTime": "", "StudyDescription": "CT",
            "ModalitiesInStudy": "CT\\SR"}


def test_library_and_sources_merge_by_study_uid_newest_first(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        current = _store(library, patient_id="ID-1", issuer="HOSP-A", date="20240601")
        old_local = _store(library, patient_id="ID-1", issuer="HOSP-A", date="20200101")
        homonym = _store(library, patient_id="ID-9", issuer="HOSP-A", date="20230101")
        record = library.study(current)
        assert record is not None and record.issuer_of_patient_id == "HOSP-A"
        pacs = Finder([_match(old_local, "ID-1", "HOSP-A", "20200101"), _match("1.2.826.0.1.7", "ID-1", "HOSP-A",
                                                                                "20220101"),
                       _match("1.2.826.0.1.8", "ID-9", "HOSP-A", "20210101"),  # homonym on the PACS
                       _match("1.2.826.0.1.9", "B-5", "HOSP-B", "20190101"),  # other issuer: to confirm
                       _match(current, "ID-1", "HOSP-A", "20240601")])
        down = Finder([], NodeUnreachableError("The PACS could not be reached."))
        updates = []
        result = find_priors(current, Patient.of_record(record), library,
                             [Source("PACS one", lambda: pacs), Source("PACS two", lambda: down)],
                             on_update=updates.append)
    assert [(p.study_uid, p.local, p.sources, p.where) for p in result.priors] == [
        ("1.2.826.0.1.7", False, ("PACS one",), "PACS one"),
        (old_local, True, ("PACS one",), "library, PACS one")]
    assert homonym not in {p.study_uid for p in result.priors + result.to_confirm}
    assert [(p.study_uid, p.match, p.patient.birth_date) for p in result.to_confirm] == [
        ("1.2.826.0.1.9", CONFIRM, "19600101")]
    assert result.notes == ["PACS two: not reachable."] and result.complete
    assert updates[0].complete is False and [p.study_uid for p in updates[0].priors] == [old_local]
    assert pacs.asked[0] == {"PatientID": "ID-1", "IssuerOfPatientID": "HOSP-A"}
    assert pacs.asked[1] == {"PatientName": "Doe^John", "PatientBirthDate": "19600101", "IssuerOfPatientID": ""}


def test_the_name_search_drops_empty_trailing_components_and_never_runs_without_a_birth_date(tmp_path: Path) -> None:
    pacs = Finder([])
    with Library.open(tmp_path / "lib") as library:
        find_priors("1.2.826.0.1.99", Patient("ID-1", "", "Doe^John^^ ", "19600101"), library, [Source("p", lambda: pacs)])
        find_priors("1.2.826.0.1.99", Patient("ID-1", "", "Doe^John", ""), library, [Source("p", lambda: pacs)])
        find_priors("1.2.826.0.1.99", Patient("ID-1", "", "Doe*", "19600101"), library, [Source("p", lambda: pacs)])
    assert [q.get("PatientName") for q in pacs.asked] == [None, "Doe^John", None, None]


def test_a_pacs_that_ignores_the_issuer_key_is_checked_here(tmp_path: Path) -> None:
    class Careless(Finder):
        def find(self, level, keys=None, *, cancel=None, limit=1000):
            return list(self.matches)  # everything, whatever the keys

    pacs = Careless([_match("1.2.826.0.1.1", "ID-1", "HOSP-Z", "20200101", name="Other^Body"),
                     _match("1.2.826.0.1.2", "ID-1", "HOSP-A", "20210101")])
    with Library.open(tmp_path / "lib") as library:
        result = find_priors("1.2.826.0.1.99", DOE, library, [Source("p", lambda: pacs)])
    assert [p.study_uid for p in result.priors] == ["1.2.826.0.1.2"] and result.to_confirm == []


def test_places_that_disagree_make_it_one_to_confirm(tmp_path: Path) -> None:
    a = Finder([_match("1.2.826.0.1.3", "ID-1", "HOSP-A", "20200101")])
    b = Finder([_match("1.2.826.0.1.3", "ID-1", "HOSP-C", "20200101")])
    with Library.open(tmp_path / "lib") as library:
        result = find_priors("1.2.826.0.1.99", DOE, library, [Source("a", lambda: a), Source("b", lambda: b)])
    assert result.priors == [] and [p.study_uid for p in result.to_confirm] == ["1.2.826.0.1.3"]


def test_the_list_is_bounded(tmp_path: Path) -> None:
    pacs = Finder([_match(f"1.2.826.0.2.{i}", "ID-1", "HOSP-A", f"2020{1 + i % 12:02d}01") for i in range(30)])
    with Library.open(tmp_path / "lib") as library:
        result = find_priors("1.2.826.0.1.99", DOE, library, [Source("p", lambda: pacs)], limit=10)
    assert len(result.priors) == 10 and result.truncated
    assert [p.study_date for p in result.priors] == sorted((p.study_date for p in result.priors), reverse=True)


def test_a_failure_is_a_note_with_the_reason(tmp_path: Path) -> None:
    refused = Finder([], PacsError("The PACS refused the search (status 0xA700)."))
    with Library.open(tmp_path / "lib") as library:
        result = find_priors("1.2.826.0.1.99", DOE, library, [Source("PACS r", lambda: refused)])
    assert result.notes == ["PACS r: The PACS refused the search (status 0xA700)."]


def test_cancel_stops_the_search(tmp_path: Path) -> None:
    from viewer.errors import OperationCancelled

    cancel = threading.Event()
    pacs = Finder([])

    def cancelled(*_a, **_k):
        cancel.set()
        raise OperationCancelled("cancelled")

    pacs.find = cancelled
    with Library.open(tmp_path / "lib") as library, pytest.raises(OperationCancelled):
        find_priors("1.2.826.0.1.99", DOE, library, [Source("p", lambda: pacs)], cancel=cancel)


def test_relevance_order_puts_the_series_like_those_on_screen_first() -> None:
    shown = [SeriesInfo("s", "CT", "CHEST", "Thorax axial 1.25 mm lung")]
    prior = [SeriesInfo("scout", "CT", "", "Scout", 1), SeriesInfo("sr", "SR", "", "Dose report", 2),
             SeriesInfo("abd", "CT", "ABDOMEN", "Abdomen axial 5 mm", 3),
             SeriesInfo("lung", "CT", "CHEST", "Thorax axial 1 mm lung", 4),
             SeriesInfo("med", "CT", "CHEST", "Thorax axial 5 mm mediastinum", 5),
             SeriesInfo("mr", "MR", "CHEST", "lung", None)]
    assert [s.series_uid for s in relevance_order(prior, shown)] == ["lung", "med", "abd", "scout", "mr", "sr"]
    assert [s.series_uid for s in relevance_order(prior, [])] == ["scout", "sr", "abd", "lung", "med", "mr"]


def test_series_info_from_a_find_answer() -> None:
    info = SeriesInfo.of({"SeriesInstanceUID": "1.2", "Modality": "CT", "SeriesNumber": "x", "SeriesDescription": "a"})
    assert (info.series_uid, info.modality, info.number, info.description) == ("1.2", "CT", None, "a")
    assert SeriesInfo.of({"SeriesNumber": " 3 "}).number == 3
