"""The retrieval engine and the failover machinery (``viewer.pacs.retrieve``, ``resume``, ``cluster``, ``health``,
``viewer.library.jobs``) adapted to Qt: the one retrieval service of the window.

One :class:`RetrievalService` per main window owns:

- the sources: cluster profiles (system ones from ``/etc/mifas-viewer/*.json``, the user's ``clusters.json``)
  and the settings' single nodes, each a cluster of one (:meth:`ClusterProfile.of_node`);
- one :class:`~viewer.pacs.health.EventLog` that every operation's retry events (``on_event``) and the health
  monitor write to; each new sentence reaches the GUI thread as :attr:`RetrievalService.event_logged`;
- the :class:`~viewer.pacs.health.HealthMonitor` of the profile being watched; its thread calls ``on_change``,
  which only emits :attr:`RetrievalService.statuses_changed` (a queued signal): no widget is touched off the GUI
  thread;
- the retrieval jobs: every retrieval, from a node or a cluster, is a persisted job (``JobStore`` + ``run_job``)
  run in the service's own worker pool, so an interrupted transfer resumes after a restart
  (:meth:`resume_pending`, at start-up) and a failed one can be retried (:meth:`retry_job`), fetching only what
  is missing.  Progress reaches the GUI through ``run_job``'s progress callback, as a queued signal.

Qt-free code (viewer.pacs, viewer.library) never sees a widget: it calls plain callbacks, which emit signals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from viewer.errors import MifasError, OperationCancelled, PacsError
from viewer.library import Library
from viewer.library.jobs import JobStore, run_job
from viewer.pacs.cluster import SYSTEM_PROFILE_DIR, ClusterProfile, ProfileSet, load_profiles, node_source
from viewer.pacs.health import EventLog, HealthMonitor, LogEntry, NodeStatus
from viewer.pacs.node import DEFAULT_STORAGE_PORT, Node
from viewer.pacs.resume import ResilientClient
from viewer.pacs.retrieve import RetrievalResult
from viewer.pacs.retry import RetryEvent
from viewer.ui.workers import TaskHandle, TaskRunner, describe_error

log = logging.getLogger(__name__)

PROFILES_FILE = "clusters.json"
HEALTH_INTERVAL_S = 3.0
PROGRESS_INTERVAL_S = 0.1
JOB_THREADS = 1  # retrievals through a cluster run one after another, like the PACS panel's


def user_profiles_path() -> Path:
    from viewer.settings import config_dir

    return config_dir() / PROFILES_FILE


@dataclass(frozen=True)
class JobOutcome:
    """How a retrieval job ended, for the GUI: ``complete`` or not, ``held``/``expected`` images, the reason."""

    job_id: int
    study_uid: str
    series_uid: str | None
    profile: str
    complete: bool
    cancelled: bool
    held: int | None
    expected: int | None
    text: str  # one sentence: what is here, or why not


class _SignallingEventLog(EventLog):
    """An EventLog that tells the service about every sentence added (from any thread)."""

    def __init__(self, notify: Callable[[LogEntry], None], serving: Callable[[], str | None]) -> None:
        super().__init__(serving=serving)
        self._notify = notify

    def add(self, text: str, at: float | None = None) -> LogEntry:
        entry = super().add(text, at)
        self._notify(entry)
        return entry


def _throttled(emit: Callable[[str, str | None, int, int | None], None],
               interval_s: float = PROGRESS_INTERVAL_S) -> Callable[[str, str | None, int, int | None], None]:
    """At most one report per `interval_s` (plus the last one, done == total) reaches the GUI."""
    last = [0.0]

    def report(study_uid: str, series_uid: str | None, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= interval_s or (total is not None and done >= total):
            last[0] = now
            emit(study_uid, series_uid, done, total)

    return report


class RetrievalService(QObject):
    """See the module docstring.  All signals are delivered on the GUI thread."""

    statuses_changed = Signal(str, object)  # profile name, list[NodeStatus]
    event_logged = Signal(str)  # one sentence of the event log
    retry_event = Signal(object)  # a viewer.pacs.retry.RetryEvent of a running operation
    profiles_changed = Signal(object)  # ProfileSet
    job_started = Signal(int, str, str)  # job id, study UID, profile name
    job_progress = Signal(int, str, int, int)  # job id, study UID, images here, images expected (-1: not known)
    job_finished = Signal(int, str, object)  # job id, study UID, JobOutcome

    def __init__(self, library: Library, parent: QObject | None = None, *,
                 profiles_path: Path | str | None = None,
                 system_dir: Path | str | None = SYSTEM_PROFILE_DIR,
                 health_interval_s: float = HEALTH_INTERVAL_S) -> None:
        super().__init__(parent)
        self.library = library
        self.profiles_path = Path(profiles_path) if profiles_path is not None else user_profiles_path()
        self.system_dir = system_dir
        self.health_interval_s = health_interval_s
        self.profiles: ProfileSet = ProfileSet({}, {})
        self._monitor: HealthMonitor | None = None
        self.event_log = _SignallingEventLog(self._on_log_entry, self._serving)
        self._runner = TaskRunner(self, max_threads=JOB_THREADS, name="cluster retrievals")
        self._tasks: dict[int, TaskHandle] = {}  # job id -> running task
        self._jobs: JobStore | None = None
        self._closed = False
        self.nodes: list[Node] = []  # the settings' single nodes (set_nodes)
        self.move_port = DEFAULT_STORAGE_PORT
        self._nodes: dict[str, ClusterProfile] = {}  # single nodes' profiles that started jobs here
        self.reload_profiles()

    # -- profiles ------------------------------------------------------------------------------------------

    def reload_profiles(self) -> ProfileSet:
        self.profiles = load_profiles(self.profiles_path, self.system_dir)
        for warning in self.profiles.warnings:
            log.warning("%s", warning)
        self.profiles_changed.emit(self.profiles)
        return self.profiles

    def profile_names(self) -> list[str]:
        return sorted(self.profiles.profiles)

    def profile(self, name: str) -> ClusterProfile:
        """The source a job names: a cluster profile, or a single node (``node:<via>:<name>``) that a panel
        started a job with or that the settings hold."""
        single = node_source(name)
        if single is None:
            return self.profiles.get(name)
        known = self._nodes.get(name)
        if known is not None:
            return known
        via, node_name = single
        node = next((n for n in self.nodes if n.name == node_name), None)
        if node is None:
            raise PacsError(f"There is no PACS node named '{node_name}' in the settings.")
        return ClusterProfile.of_node(node, via, move_port=self.move_port)

    def set_nodes(self, nodes: list[Node], move_port: int = DEFAULT_STORAGE_PORT) -> None:
        """The settings' single nodes, so that their unfinished jobs can resume."""
        self.nodes = list(nodes)
        self.move_port = move_port

    # -- events --------------------------------------------------------------------------------------------

    def _on_log_entry(self, entry: LogEntry) -> None:
        if not self._closed:
            self.event_logged.emit(entry.text)  # queued to the GUI thread when called from a worker

    def on_event(self, event: RetryEvent) -> None:
        """The ``on_event`` of every operation run through a profile (worker threads)."""
        self.event_log.record(event)
        if not self._closed:
            self.retry_event.emit(event)

    def client(self, profile: ClusterProfile | str) -> ResilientClient:
        if isinstance(profile, str):
            profile = self.profile(profile)
        return ResilientClient(profile, self.library, on_event=self.on_event)

    # -- health --------------------------------------------------------------------------------------------

    @property
    def watched(self) -> str | None:
        return self._monitor.profile.name if self._monitor is not None else None

    def _serving(self) -> str | None:
        monitor = self._monitor
        return monitor.serving() if monitor is not None else None

    def watch(self, name: str | None) -> None:
        """Probe profile `name` (None: stop probing).  The monitor's thread is started here, by the caller's
        thread, and inherits its network namespace."""
        profile = self.profiles.profiles.get(name) if name is not None else None
        if self._monitor is not None and profile is not None and self._monitor.profile == profile:
            return  # already watching it, unchanged
        self._stop_monitor()
        if profile is None:
            return

        def changed(statuses: list[NodeStatus]) -> None:  # the monitor's thread: emit only
            if not self._closed:
                self.statuses_changed.emit(profile.name, list(statuses))

        self._monitor = HealthMonitor(profile, self.health_interval_s, changed, event_log=self.event_log)
        self.statuses_changed.emit(profile.name, self._monitor.statuses())  # "not checked yet" at once
        self._monitor.start()

    def statuses(self) -> list[NodeStatus]:
        return self._monitor.statuses() if self._monitor is not None else []

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.on_change = None
            threading.Thread(target=monitor.stop, name="viewer.ui.health-stop", daemon=True).start()

    # -- jobs ----------------------------------------------------------------------------------------------

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(self.library)
        return self._jobs

    def running_jobs(self) -> list[int]:
        return [job_id for job_id, task in self._tasks.items() if task.running]

    def start_job(self, source: ClusterProfile | str, study_uid: str, series_uid: str | None = None) -> int:
        """Queue the retrieval of a study (or series) from `source` (a cluster profile or its name, or a single
        node's profile, :meth:`ClusterProfile.of_node`) as a persisted job; return its id.  An unfinished job
        for the same study and source is reused (only what is missing is fetched)."""
        if isinstance(source, ClusterProfile):
            if source.single_node is not None:
                self._nodes[source.name] = source
            name = source.name
        else:
            name = source
        self.profile(name)  # an unknown source is said before anything is queued
        job_id = self.jobs.add(study_uid, series_uid, name)
        task = self._tasks.get(job_id)
        if task is not None and task.running:
            return job_id
        self._submit(job_id)
        return job_id

    def retry_job(self, job_id: int) -> int:
        job = self.jobs.get(job_id)
        return self.start_job(job.profile, job.study_uid, job.series_uid)

    def _submit(self, job_id: int) -> TaskHandle:
        job = self.jobs.get(job_id)
        profile = self.profile(job.profile)
        jobs, library, on_event = self.jobs, self.library, self.on_event

        report = _throttled(lambda study, series, done, total: self._emit_progress(job_id, study, done, total))

        def work(progress, cancel):
            client = ResilientClient(profile, library, on_event=on_event)
            return run_job(client, jobs, jobs.get(job_id), cancel,
                           progress=lambda done, total: report(job.study_uid, job.series_uid, done, total))

        def on_done(outcome: RetrievalResult | None) -> None:
            self.job_finished.emit(job_id, job.study_uid, self._outcome(job_id, outcome))

        def on_error(exc: BaseException) -> None:
            cancelled = isinstance(exc, OperationCancelled)
            if not cancelled and not isinstance(exc, MifasError):
                try:
                    jobs.mark_failed(job_id, describe_error(exc))
                except MifasError:
                    pass
            text = ("The retrieval was interrupted; it resumes next time." if cancelled else describe_error(exc))
            self.job_finished.emit(job_id, job.study_uid, self._outcome(job_id, None, text=text,
                                                                        cancelled=cancelled))

        handle = self._runner.submit(work, on_done=on_done, on_error=on_error, name="cluster retrieval")
        self._tasks[job_id] = handle
        log.info("retrieval job %d: study %s through cluster %s", job_id, job.study_uid, job.profile)
        self.job_started.emit(job_id, job.study_uid, job.profile)
        return handle

    def _outcome(self, job_id: int, result: RetrievalResult | None, *, text: str = "",
                 cancelled: bool = False) -> JobOutcome:
        try:
            job = self.jobs.get(job_id)
        except MifasError as exc:
            return JobOutcome(job_id, "", None, "", False, cancelled, None, None, text or str(exc))
        if result is not None:
            return JobOutcome(job_id, job.study_uid, job.series_uid, job.profile, result.complete, False,
                              result.held, result.expected, result.describe())
        return JobOutcome(job_id, job.study_uid, job.series_uid, job.profile, job.state == "done", cancelled,
                          job.received, job.expected, text or job.last_error or "The retrieval failed.")

    def cancel_job(self, job_id: int) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()

    def resume_pending(self) -> TaskHandle | None:
        """Resume, in a worker, every job a previous run left pending (interrupted or crashed), profile by
        profile.  Returns at once; None when there is nothing to resume."""
        try:
            pending = self.jobs.pending()
        except MifasError as exc:
            log.warning("pending retrieval jobs cannot be listed: %s", exc)
            return None
        names = sorted({j.profile for j in pending if self._resolvable(j.profile)})
        skipped = {j.profile for j in pending} - set(names)
        if skipped:
            log.warning("%d pending retrieval job(s) name unknown cluster profiles; left pending",
                        sum(1 for j in pending if j.profile in skipped))
        if not names:
            return None
        profiles = [self.profile(n) for n in names]
        jobs, library, on_event = self.jobs, self.library, self.on_event
        self.event_log.add(f"Resuming {len([j for j in pending if j.profile in names])} interrupted "
                           f"retrieval(s) from the last session.")

        ids = {(j.study_uid, j.series_uid): j.job_id for j in pending}

        def emit(study: str, series: str | None, done: int, total: int | None) -> None:
            self._emit_progress(ids.get((study, series), 0), study, done, total)

        def work(progress, cancel):
            results = []
            report = _throttled(emit)
            for profile in profiles:
                for job in jobs.pending(profile.name):
                    if cancel.is_set():
                        return results
                    client = ResilientClient(profile, library, on_event=on_event)
                    outcome = run_job(client, jobs, job, cancel, progress=lambda done, total, job=job: report(
                        job.study_uid, job.series_uid, done, total))
                    results.append((job, outcome))
            return results

        def on_done(results) -> None:
            for job, outcome in results:
                self.job_finished.emit(job.job_id, job.study_uid, self._outcome(job.job_id, outcome))

        for job in pending:
            if job.profile in names:
                self.job_started.emit(job.job_id, job.study_uid, job.profile)
        return self._runner.submit(work, on_done=on_done, name="resume retrievals")

    def _resolvable(self, name: str) -> bool:
        try:
            self.profile(name)
        except MifasError:
            return False
        return True

    def _emit_progress(self, job_id: int, study_uid: str, done: int, total: int | None) -> None:
        """From a worker thread: a queued signal to the GUI thread."""
        if not self._closed:
            self.job_progress.emit(job_id, study_uid, int(done), -1 if total is None else int(total))

    # -- life cycle ----------------------------------------------------------------------------------------

    def wait(self, timeout_ms: int = 5000) -> bool:
        return self._runner.wait(timeout_ms)

    def shutdown(self) -> None:
        """Stop the monitor and cancel the jobs (they stay pending and resume at the next start)."""
        self._runner.shutdown()
        self._closed = True
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.on_change = None
            monitor.stop()
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None
