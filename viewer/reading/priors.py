"""Prior studies of the patient of an open study (no Qt): who counts as the same patient, where the priors are
found, and which series of a prior to fetch first.

The matching rule.  A study is a *prior* of the open study when it has the same Patient ID (0010,0020) AND the
same Issuer of Patient ID (0010,0021).  IDs are compared exactly (surrounding spaces aside, as DICOM pads values),
issuers too, and an empty issuer is a value like any other: it matches only an empty issuer (an ID from an unnamed
authority is not assumed to be the same as one from a named authority).  A study whose issuer differs but whose
Patient's Name AND Birth Date both match (names compared ignoring case, spaces and empty trailing components;
neither may be empty) is listed apart, *to confirm*: the reader sees the name and birth date and must confirm
before comparing.  Nothing is ever matched on the name alone: a homonym (same name, a different ID from the same
issuer, whatever the birth date) is never offered, and an open study without a Patient ID has no priors.

Where.  The local library and every configured PACS source are asked (:func:`find_priors`); a source gets two
STUDY-level C-FINDs through its :class:`~viewer.pacs.resume.ResilientClient` (so failover applies): Patient ID
and Issuer of Patient ID as keys, and Patient's Name and Birth Date as keys (only to find the studies to
confirm); each answer is checked against the rule above here, whatever the PACS did with the keys.  Rows are
merged by Study Instance UID (a study in the library and on a PACS is one row, marked local), sorted newest
first and bounded by :data:`~viewer.limits.PRIORS_MAX`.  A source that fails is a note in the result, never an
exception that hides the others.

Which series first.  :func:`relevance_order` puts the prior's series that resemble the series on screen
(modality, body part, words of the description) first; the viewer fetches them in that order.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from viewer.errors import MifasError, NodeUnreachableError, OperationCancelled, PacsError, PacsTimeoutError
from viewer.limits import PRIORS_MAX
from viewer.uid import is_valid_uid

log = logging.getLogger(__name__)

PRIOR = "prior"  # same Patient ID and issuer
CONFIRM = "confirm"  # different issuer, same name and birth date: the reader confirms
SOURCE_THREADS_MAX = 8  # PACS sources asked at the same time


@dataclass(frozen=True)
class Patient:
    """The identifying attributes the rule compares, as read from a study."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str

    @classmethod
    def of(cls, row: Mapping[str, str]) -> Patient:
        """From a C-FIND answer (DICOM keywords)."""
        return cls(row.get("PatientID", ""), row.get("IssuerOfPatientID", ""), row.get("PatientName", ""),
                   row.get("PatientBirthDate", ""))

    @classmethod
    def of_record(cls, record: Any) -> Patient:
        """From a :class:`~viewer.library.store.StudyRecord`."""
        return cls(record.patient_id, getattr(record, "issuer_of_patient_id", ""), record.patient_name,
                   record.patient_birth_date)


def _name(value: str) -> str:
    """A person name for comparison: case, spaces around components and empty trailing components ignored."""
    groups = [("^".join(part.strip() for part in group.split("^"))).rstrip("^") for group in value.upper().split("=")]
    return "=".join(groups).rstrip("=")


def classify(current: Patient, other: Patient) -> str | None:
    """:data:`PRIOR`, :data:`CONFIRM` or None (never offered): the module docstring's rule."""
    current_id = current.patient_id.strip()
    if not current_id:
        return None
    same_issuer = other.issuer.strip() == current.issuer.strip()
    if same_issuer:
        return PRIOR if other.patient_id.strip() == current_id else None  # same issuer, other ID: a homonym
    name, birth = _name(current.name), current.birth_date.strip()
    if name and birth and _name(other.name) == name and other.birth_date.strip() == birth:
        return CONFIRM
    return None


@dataclass(frozen=True)
class PriorStudy:
    """One study of the list: where it is (``local``, and the PACS sources that answered it) and what it is."""

    study_uid: str
    study_date: str
    study_time: str
    description: str
    modalities: tuple[str, ...]
    patient: Patient
    match: str  # PRIOR or CONFIRM
    local: bool = False
    sources: tuple[str, ...] = ()  # labels of the PACS sources holding it

    @property
    def where(self) -> str:
        places = (["library"] if self.local else []) + list(self.sources)
        return ", ".join(places)


@dataclass
class PriorSearch:
    """What :func:`find_priors` found: the priors and the studies to confirm (newest first), notes (one sentence
    per source that failed or answered only in part), and whether the list was cut at the limit."""

    priors: list[PriorStudy] = field(default_factory=list)
    to_confirm: list[PriorStudy] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False
    complete: bool = True  # False for an interim result (some sources still to answer)


class StudyFinder(Protocol):
    """What a PACS source offers (a ResilientClient): a STUDY-level query."""

    def find(self, level: str, keys: Mapping[str, str] | None = None, *, cancel: threading.Event | None = None,
             limit: int = ...) -> list[dict[str, str]]: ...


@dataclass(frozen=True)
class Source:
    """A configured PACS source: its label for the reader and how to make its client (in the searching thread)."""

    label: str
    client: Callable[[], StudyFinder]
    audit_as: Any = None  # the Node or ClusterProfile named in the audit trail's Query message


# -- candidates ---------------------------------------------------------------------------------------------------

@dataclass
class _Candidate:
    study: PriorStudy
    kinds: set[str]


def _library_rows(library: Any, current_uid: str, current: Patient) -> list[tuple[PriorStudy, str | None]]:
    from viewer.library.store import StudyQuery

    records = {r.study_uid: r for r in library.studies(StudyQuery(patient_id=current.patient_id.strip()))}
    name = _name_key(current)
    if name:
        records.update((r.study_uid, r) for r in library.studies(StudyQuery(patient_name=name)))
    rows = []
    for record in records.values():
        if record.study_uid == current_uid:
            continue
        patient = Patient.of_record(record)
        study = PriorStudy(record.study_uid, record.study_date, record.study_time, record.study_description,
                           tuple(record.modalities), patient, PRIOR, local=True)
        rows.append((study, classify(current, patient)))
    return rows


def _source_queries(current: Patient) -> list[dict[str, str]]:
    """The C-FIND keys a source is asked with (return keys besides: the STUDY level's defaults)."""
    queries = [{"PatientID": current.patient_id.strip(), "IssuerOfPatientID": current.issuer.strip()}]
    name = _name_key(current)
    if name:
        queries.append({"PatientName": name, "PatientBirthDate": current.birth_date.strip(), "IssuerOfPatientID": ""})
    return queries


def _name_key(current: Patient) -> str:
    """The name to search the studies to confirm by ("" when there are none to look for: no name or no birth
    date, or a name with wildcard characters): trailing empty components dropped, the rest as written (the
    answers are compared by :func:`classify`)."""
    name = current.name.strip().rstrip("^ ")
    if not _name(name) or not current.birth_date.strip() or set(name) & set("*?\\"):
        return ""
    return name


def _source_rows(source: Source, current_uid: str, current: Patient, cancel: threading.Event | None,
                 limit: int) -> tuple[list[tuple[PriorStudy, str | None]], bool]:
    """The candidates one source answered, and whether an answer was cut at `limit`."""
    from viewer.audit.transfers import audited_query

    client = source.client()
    rows, truncated = [], False
    try:
        for keys in _source_queries(current):
            with audited_query(source.audit_as if source.audit_as is not None else getattr(client, "profile", None),
                               "study", keys):
                answer = client.find("study", keys, cancel=cancel, limit=limit)
            truncated = truncated or bool(getattr(answer, "truncated", False)) or len(answer) >= limit
            for match in answer:
                uid = match.get("StudyInstanceUID", "")
                if not is_valid_uid(uid) or uid == current_uid:
                    continue
                patient = Patient.of(match)
                modalities = tuple(m for m in match.get("ModalitiesInStudy", "").split("\\") if m)
                study = PriorStudy(uid, match.get("StudyDate", ""), match.get("StudyTime", ""),
                                   match.get("StudyDescription", ""), modalities, patient, PRIOR,
                                   sources=(source.label,))
                rows.append((study, classify(current, patient)))
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()
    return rows, truncated


def _merge(candidates: dict[str, _Candidate], rows: Sequence[tuple[PriorStudy, str | None]]) -> None:
    """Add `rows` (one source's, or the library's) to `candidates`, one entry per Study Instance UID."""
    for study, kind in rows:
        held = candidates.get(study.study_uid)
        kinds = {kind or "none"}
        if held is None:
            candidates[study.study_uid] = _Candidate(study, kinds)
            continue
        held.kinds |= kinds
        old = held.study
        held.study = replace(old, local=old.local or study.local,
                             sources=tuple(dict.fromkeys(old.sources + study.sources)),
                             modalities=old.modalities or study.modalities,
                             description=old.description or study.description,
                             study_date=old.study_date or study.study_date, study_time=old.study_time or study.study_time)


def _result(candidates: dict[str, _Candidate], notes: list[str], truncated: bool, limit: int,
            complete: bool) -> PriorSearch:
    """The list: PRIOR only when every place that holds the study agrees; places that disagree make it one to
    confirm (the data contradict each other: the reader decides)."""
    result = PriorSearch(notes=list(notes), truncated=truncated, complete=complete)
    for candidate in candidates.values():
        if candidate.kinds == {PRIOR}:
            result.priors.append(replace(candidate.study, match=PRIOR))
        elif candidate.kinds & {PRIOR, CONFIRM}:
            result.to_confirm.append(replace(candidate.study, match=CONFIRM))
    for group in (result.priors, result.to_confirm):
        group.sort(key=lambda s: (s.study_date, s.study_time, s.study_uid), reverse=True)
    if len(result.priors) + len(result.to_confirm) > limit:
        result.truncated = True
        result.priors = result.priors[:limit]
        result.to_confirm = result.to_confirm[:max(0, limit - len(result.priors))]
    return result


def describe_failure(label: str, exc: BaseException) -> str:
    """The note for a source that failed: one sentence, no patient data."""
    if isinstance(exc, (NodeUnreachableError, PacsTimeoutError)) or (
            isinstance(exc, PacsError) and exc.transient):
        return f"{label}: not reachable."
    if isinstance(exc, MifasError):
        return f"{label}: {str(exc).rstrip('.')}."
    return f"{label}: the search failed ({type(exc).__name__})."


def find_priors(current_uid: str, current: Patient, library: Any, sources: Sequence[Source] = (), *,
                cancel: threading.Event | None = None, limit: int = PRIORS_MAX,
                on_update: Callable[[PriorSearch], None] | None = None) -> PriorSearch:
    """The priors of study `current_uid` (whose patient is `current`) in `library` and on `sources`.

    The library is asked first; the sources are asked at the same time (one thread each, at most
    :data:`SOURCE_THREADS_MAX`).  ``on_update(result)`` hears the interim list after the library and after each
    source (``complete`` False until the last), so a slow or dead source does not hold back the others.
    Raises OperationCancelled when `cancel` is set."""
    if not current.patient_id.strip():
        return PriorSearch(notes=["This study has no Patient ID: its priors cannot be matched."])
    candidates: dict[str, _Candidate] = {}
    notes: list[str] = []
    truncated = False
    lock = threading.Lock()
    try:
        _merge(candidates, _library_rows(library, current_uid, current))
    except MifasError as exc:
        notes.append(f"Local library: {str(exc).rstrip('.')}.")
    if on_update is not None:
        on_update(_result(candidates, notes, truncated, limit, complete=not sources))
    if not sources:
        return _result(candidates, notes, truncated, limit, complete=True)

    def ask(source: Source) -> None:
        nonlocal truncated
        try:
            rows, cut = _source_rows(source, current_uid, current, cancel, limit)
        except OperationCancelled:
            return
        except Exception as exc:  # noqa: BLE001 - one failing source must not hide the others
            log.info("prior search on a source failed: %s", type(exc).__name__)
            with lock:
                notes.append(describe_failure(source.label, exc))
                interim = _result(candidates, notes, truncated, limit, complete=False)
        else:
            with lock:
                _merge(candidates, rows)
                truncated = truncated or cut
                interim = _result(candidates, notes, truncated, limit, complete=False)
        if on_update is not None and not (cancel is not None and cancel.is_set()):
            on_update(interim)

    with ThreadPoolExecutor(max_workers=min(SOURCE_THREADS_MAX, len(sources)),
                            thread_name_prefix="viewer.priors") as pool:
        list(pool.map(ask, sources))
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("The search for prior studies was cancelled.")
    return _result(candidates, notes, truncated, limit, complete=True)


# -- which series first ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeriesInfo:
    """What the relevance order looks at of a series (from the library, or a SERIES-level C-FIND)."""

    series_uid: str
    modality: str = ""
    body_part: str = ""
    description: str = ""
    number: int | None = None

    @classmethod
    def of(cls, row: Mapping[str, str]) -> SeriesInfo:
        number = row.get("SeriesNumber", "").strip()
        return cls(row.get("SeriesInstanceUID", ""), row.get("Modality", ""), row.get("BodyPartExamined", ""),
                   row.get("SeriesDescription", ""), int(number) if re.fullmatch(r"[+-]?\d{1,9}", number) else None)


_WORD = re.compile(r"[a-z0-9]+")
MODALITY_WEIGHT, BODY_PART_WEIGHT, WORDS_WEIGHT = 4.0, 2.0, 3.0


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def relevance(series: SeriesInfo, shown: SeriesInfo) -> float:
    """How much `series` (of the prior) resembles `shown` (on screen): same modality, same body part, and the
    share of description words in common (Jaccard), weighted in that order."""
    score = 0.0
    if series.modality and series.modality.strip().upper() == shown.modality.strip().upper():
        score += MODALITY_WEIGHT
    if series.body_part and series.body_part.strip().upper() == shown.body_part.strip().upper():
        score += BODY_PART_WEIGHT
    a, b = _words(series.description), _words(shown.description)
    if a and b:
        score += WORDS_WEIGHT * len(a & b) / len(a | b)
    return score


def relevance_order(prior_series: Sequence[SeriesInfo], shown: Sequence[SeriesInfo]) -> list[SeriesInfo]:
    """The prior's series, the most relevant to any of the `shown` series first; ties keep the series number
    order (series without a number last)."""
    def key(item: tuple[int, SeriesInfo]) -> tuple[float, int, int, int]:
        index, series = item
        best = max((relevance(series, s) for s in shown), default=0.0)
        return (-best, series.number is None, series.number or 0, index)

    return [series for _, series in sorted(enumerate(prior_series), key=key)]
