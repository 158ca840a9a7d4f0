"""Retrieval jobs persisted in the library, so that a transfer interrupted by a crash, a cancel or a restart
of the viewer resumes on the next start (index version 2, table ``jobs``; see ``schema_v2.sql``).

A job names what to fetch (study, optionally one series), from which source (a cluster profile's name, or
``node:<via>:<node name>`` for a single node: :func:`viewer.pacs.cluster.node_source`), and how far it got.
States: ``pending`` (queued, or interrupted: run it again), ``running`` (a viewer is on it; one found at start-up
was interrupted by a crash and counts as pending), ``done``, ``failed`` (the budget ran out or the PACS refused;
the user may retry).  Only UIDs, counts and error sentences are stored: no patient data.

    jobs = JobStore(library)
    job_id = jobs.add(study_uid, None, profile.name)
    run_job(client, jobs, jobs.get(job_id))          # or, at start-up:  resume_pending(client, jobs)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from viewer.errors import LibraryError, MifasError, OperationCancelled
from viewer.library.store import Library, is_valid_uid

if TYPE_CHECKING:  # viewer.pacs imports viewer.library, not the other way round at run time
    from viewer.pacs.resume import ResilientClient
    from viewer.pacs.retrieve import RetrievalResult

JOB_STATES: tuple[str, ...] = ("pending", "running", "done", "failed")
ERROR_CHARS_MAX = 500
PENDING_MAX = 1000  # jobs resumed at one start; more wait for the next
BUSY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Job:
    job_id: int
    study_uid: str
    series_uid: str | None
    profile: str
    state: str
    expected: int | None
    received: int
    attempts: int
    last_error: str
    created_at: float
    updated_at: float


_COLUMNS = ("job_id, study_uid, series_uid, profile, state, expected, received, attempts, last_error, created_at,"
            " updated_at")


class JobStore:
    """The library's job table.  Thread-safe; it has its own SQLite connection to the library's index (WAL
    lets it work beside the library's), so it touches nothing else of the library."""

    def __init__(self, library: Library) -> None:
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(library.root / "index.sqlite", check_same_thread=False, isolation_level=None,
                                       timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA secure_delete=ON")  # as the library's own connection
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name='jobs'").fetchone() is None:
                raise LibraryError(f"The library in {library.root} has no job table (open it with Library first).")
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"The library index in {library.root} is damaged or locked: {exc}.") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, args)
            except sqlite3.Error as exc:
                raise LibraryError(f"The library's job list could not be updated: {exc}.") from exc

    def add(self, study_uid: str, series_uid: str | None, profile: str) -> int:
        """Queue a retrieval; an unfinished job for the same study, series and profile is reused."""
        if not is_valid_uid(study_uid) or (series_uid is not None and not is_valid_uid(series_uid)):
            raise LibraryError("A retrieval job needs valid study (and series) UIDs.")
        existing = self._execute(
            "SELECT job_id FROM jobs WHERE study_uid=? AND series_uid IS ? AND profile=? AND state IN"
            " ('pending','running','failed')", (study_uid, series_uid, profile)).fetchone()
        now = time.time()
        if existing is not None:
            self._execute("UPDATE jobs SET state='pending', updated_at=? WHERE job_id=?", (now, existing[0]))
            return int(existing[0])
        cursor = self._execute(
            "INSERT INTO jobs (study_uid, series_uid, profile, state, created_at, updated_at)"
            " VALUES (?,?,?,'pending',?,?)", (study_uid, series_uid, profile, now, now))
        return int(cursor.lastrowid or 0)

    def get(self, job_id: int) -> Job:
        row = self._execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise LibraryError(f"There is no retrieval job {job_id}.")
        return Job(*row)

    def update(self, job_id: int, *, state: str | None = None, expected: int | None = None,
               received: int | None = None, last_error: str | None = None, attempt: bool = False) -> None:
        if state is not None and state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}")
        sets, args = ["updated_at=?"], [time.time()]
        for column, value in (("state", state), ("expected", expected), ("received", received),
                              ("last_error", None if last_error is None else last_error[:ERROR_CHARS_MAX])):
            if value is not None:
                sets.append(f"{column}=?")
                args.append(value)  # type: ignore[arg-type]
        if attempt:
            sets.append("attempts=attempts+1")
        self._execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id=?", (*args, job_id))

    def mark_done(self, job_id: int, received: int | None = None) -> None:
        self.update(job_id, state="done", received=received, last_error="")

    def mark_failed(self, job_id: int, error: str) -> None:
        self.update(job_id, state="failed", last_error=error)

    def pending(self, profile: str | None = None) -> list[Job]:
        """Jobs to (re)run, oldest first: pending ones, and running ones left by a crash."""
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE state IN ('pending','running')"
        args: tuple[object, ...] = ()
        if profile is not None:
            sql += " AND profile=?"
            args = (profile,)
        rows = self._execute(sql + f" ORDER BY job_id LIMIT {PENDING_MAX}", args).fetchall()
        return [Job(*r) for r in rows]

    def jobs(self, limit: int = 100) -> list[Job]:
        """The newest jobs, for a transfer list in the UI."""
        rows = self._execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY job_id DESC LIMIT ?", (max(1, limit),)).fetchall()
        return [Job(*r) for r in rows]


def run_job(client: ResilientClient, jobs: JobStore, job: Job, cancel: threading.Event | None = None,
            progress: Callable[[int, int | None], None] | None = None) -> RetrievalResult | None:
    """Run one job with `client` (its source: a cluster, or a node as a cluster of one) and record the outcome.
    `progress(done, total)` hears every step (the job table only every half second).  Cancelling leaves the job
    pending (it resumes next time) and re-raises OperationCancelled; an incomplete retrieval marks it failed
    with the reason."""
    jobs.update(job.job_id, state="running", attempt=True)
    record = _every(lambda done, total: jobs.update(job.job_id, received=done, expected=total))

    def both(done: int, total: int | None) -> None:
        record(done, total)
        if progress is not None:
            progress(done, total)

    from viewer import audit
    from viewer.audit.transfers import transfer_begin, transferred

    library = client.library
    transfer_begin(client.profile, audit.study_ref(library, job.study_uid))
    try:
        outcome = client.retrieve(job.study_uid, job.series_uid, progress=both, cancel=cancel)
    except OperationCancelled:
        jobs.update(job.job_id, state="pending", last_error="interrupted")
        transferred(client.profile, audit.study_ref(library, job.study_uid), None)
        raise
    except MifasError as exc:
        jobs.mark_failed(job.job_id, str(exc))
        transferred(client.profile, audit.study_ref(library, job.study_uid), None)
        audit.authentication_failure(exc, client.profile.ae_title, client.profile.vip.host)  # a refused certificate
        return None
    transferred(client.profile, audit.study_ref(library, job.study_uid, outcome.held), outcome)
    jobs.update(job.job_id, expected=outcome.expected, received=outcome.held)
    if outcome.complete:
        jobs.mark_done(job.job_id, outcome.held)
    else:
        jobs.mark_failed(job.job_id, outcome.describe())
    return outcome


def resume_pending(client: ResilientClient, jobs: JobStore | None = None,
                   cancel: threading.Event | None = None) -> list[tuple[Job, RetrievalResult | None]]:
    """Run every pending job of the client's profile, oldest first (call at start-up, off the GUI thread)."""
    if jobs is None:
        if client.library is None:
            raise ValueError("resume_pending needs a JobStore or a client with a library")
        jobs = JobStore(client.library)
    results = []
    for job in jobs.pending(client.profile.name):
        if cancel is not None and cancel.is_set():
            break
        results.append((job, run_job(client, jobs, job, cancel)))
    return results


def _every(progress: Callable[[int, int | None], None], interval_s: float = 0.5) -> Callable[[int, int | None], None]:
    """Throttle `progress(done, total)` to one index write per `interval_s` (plus the last call)."""
    last = [0.0]

    def throttled(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= interval_s or (total is not None and done >= total):
            last[0] = now
            progress(done, total)

    return throttled
