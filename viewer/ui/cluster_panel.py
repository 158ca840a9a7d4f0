"""A cluster profile as a browser page: the PACS panel, but every search and retrieval goes through the
retry-and-resume engine (``ResilientClient``) over the profile's virtual IP and members.

Searches run in the panel's own worker; retrievals are persisted jobs run by the window's
:class:`~viewer.ui.cluster_service.ClusterService` (so they survive the panel, resume after a restart and can
be retried from the failover banner).  An outage never opens a dialog: the banner and the event log say what
happens, and the status line below the results says how the retrieval ended.
"""

from __future__ import annotations

import logging

from PySide6.QtWidgets import QWidget

from viewer.errors import MifasError
from viewer.library import Library
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.resume import OPERATION
from viewer.ui.cluster_service import ClusterService, JobOutcome
from viewer.ui.pacs_panel import PacsPanel, _escape

log = logging.getLogger(__name__)

CLUSTER_VIA = "cluster"


def describe_profile(profile: ClusterProfile) -> str:
    members = ", ".join(a.name or a.host for a in profile.members) or "no members"
    return (f"cluster: virtual IP {profile.vip.host}:{profile.vip.port}, AE {profile.ae_title}; members {members}; "
            f"retry budget {profile.retry.budget_s:g} s")


class ClusterPacsPanel(PacsPanel):
    """Search a cluster profile and retrieve studies into ``library`` as persisted jobs of ``service``."""

    def __init__(self, profile: ClusterProfile, library: Library, service: ClusterService,
                 parent: QWidget | None = None) -> None:
        super().__init__(profile, library, parent, via=CLUSTER_VIA)  # type: ignore[arg-type]
        self.service = service
        self.profile = profile
        self._job_ids: set[int] = set()
        self._announced: set[int] = set()
        self.via.setToolTip("The profile's retrieval order; each attempt asks only for the images still missing")
        service.job_started.connect(self._on_job_started)
        service.job_progress.connect(self._on_job_progress)
        service.job_finished.connect(self._on_job_finished)

    # -- PacsPanel hooks -----------------------------------------------------------------------------------

    def _title_text(self) -> str:
        return f"<b>{_escape(self.node.name)}</b> — {_escape(describe_profile(self.node))}"  # type: ignore[arg-type]

    def _via_choices(self) -> list[tuple[str, str]]:
        order = " → ".join(OPERATION[m] for m in self.node.retrievals())  # type: ignore[attr-defined]
        return [(CLUSTER_VIA, f"{order} (the profile's order)")]

    def _query_client(self, via: str):
        return self.service.client(self.node)  # type: ignore[arg-type]

    # -- retrieval as jobs ---------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        query = self._query_task is not None and self._query_task.running
        service = getattr(self, "service", None)  # None while PacsPanel.__init__ runs
        return query or (service is not None and bool(self._job_ids & set(service.running_jobs())))

    def retrieve(self, study_uid: str, series_uid: str | None = None) -> int | None:
        """Queue the retrieval as a persisted job; returns the job id (None when it cannot be queued)."""
        try:
            job_id = self.service.start_job(self.node.name, study_uid, series_uid)
        except MifasError as exc:
            self._say(str(exc), error=True)
            return None
        log.info("retrieving study %s through cluster %s (job %d)", study_uid, self.node.name, job_id)
        self._job_ids.add(job_id)
        self._announced.discard(job_id)
        self._say(f"Retrieving through the cluster {self.node.name}…")
        self._update_buttons()
        return job_id

    def _on_job_started(self, job_id: int, study_uid: str, profile: str) -> None:
        if profile == self.node.name and job_id not in self._job_ids:  # started elsewhere: Retry, resume
            self._job_ids.add(job_id)
            self._announced.discard(job_id)
            self._say(f"Retrieving through the cluster {self.node.name}…")
            self._update_buttons()

    def _on_job_progress(self, job_id: int, study_uid: str, done: int, total: int) -> None:
        if job_id not in self._job_ids:
            return
        self._show_progress(done, total)
        if done > 0 and job_id not in self._announced:
            self._announced.add(job_id)  # the first images are in: the viewer can show the study already
            self.retrieved.emit(study_uid)

    def _on_job_finished(self, job_id: int, study_uid: str, outcome: JobOutcome) -> None:
        if job_id not in self._job_ids:
            return
        self._job_ids.discard(job_id)
        if outcome.cancelled:
            self._say("Retrieval cancelled; the images already received were kept and it resumes next time.")
        elif outcome.complete:
            self._say(f"Retrieved through the cluster {self.node.name}: {outcome.text}")
        else:
            self._say(f"The retrieval through the cluster {self.node.name} stopped: {outcome.text}", error=True)
        if not self._job_ids:
            self.progress.hide()
        self.results.refresh_local()
        self._update_buttons()
        self.retrieved.emit(study_uid)

    def cancel(self) -> None:
        if self._query_task is not None:
            self._query_task.cancel()
        for job_id in self._job_ids:
            self.service.cancel_job(job_id)
        if self._job_ids:
            self._say("Cancelling…")
