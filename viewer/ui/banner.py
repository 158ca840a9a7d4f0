"""The failover banner: an in-window bar above the image (never a modal dialog) that says in words what the
PACS connection is doing.

- An outage within the retry budget: "The PACS stopped answering; retrying… 137 of 300
  images are here."  It disappears as soon as the operation resumes.
- The budget ran out (or the PACS refused): what is here and why not the rest, with a **Retry** button that
  runs the job again (only the missing images are fetched).

:class:`FailoverBanner` is the widget; :class:`BannerController` turns the service's signals (retry events, job
progress, job outcomes) into what the banner says.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

from viewer.errors import MifasError
from viewer.pacs.cluster import source_name
from viewer.pacs.retry import AttemptFailed, GaveUp, Resumed, RetryEvent
from viewer.ui.retrieval_service import JobOutcome, RetrievalService

RETRYING_STYLE = "QFrame#failover-banner { background: #fff4ce; border-bottom: 1px solid #c9a400; }"
FAILED_STYLE = "QFrame#failover-banner { background: #fde7e9; border-bottom: 1px solid #b00020; }"
RETRYING_TEXT = "The PACS stopped answering; retrying…"


def counts_text(done: int | None, total: int | None) -> str:
    if done is None or total is None or total < 0:
        return ""
    return f" {done} of {total} images are here."


class FailoverBanner(QFrame):
    """A bar with a sentence, an optional Retry button and a close button.  ``state``: "hidden", "retrying"
    or "failed"."""

    retry_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("failover-banner")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.label = QLabel("", self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.retry_button = QPushButton("Retry", self)
        self.retry_button.setToolTip("Run the retrieval again; only the images still missing are fetched")
        self.retry_button.clicked.connect(self.retry_clicked)
        self.close_button = QToolButton(self)
        self.close_button.setText("✕")
        self.close_button.setToolTip("Hide this message")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.retry_button)
        layout.addWidget(self.close_button)
        self.state = "hidden"
        self.hide()

    @property
    def text(self) -> str:
        return self.label.text()

    def show_retrying(self, text: str) -> None:
        self.state = "retrying"
        self.setStyleSheet(RETRYING_STYLE)
        self.label.setText(text)
        self.retry_button.hide()
        self.close_button.hide()
        self.show()

    def show_failed(self, text: str, *, can_retry: bool) -> None:
        self.state = "failed"
        self.setStyleSheet(FAILED_STYLE)
        self.label.setText(text)
        self.retry_button.setVisible(can_retry)
        self.retry_button.setEnabled(can_retry)
        self.close_button.show()
        self.show()

    def dismiss(self) -> None:
        self.state = "hidden"
        self.label.setText("")
        self.hide()


class BannerController(QObject):
    """Drives a :class:`FailoverBanner` from a :class:`RetrievalService`.

    Retry events (AttemptFailed, transient) open the "retrying" state; Resumed closes it; the end of a job
    that did not complete opens the "failed" state with Retry, which restarts the failed jobs.
    """

    def __init__(self, service: RetrievalService, banner: FailoverBanner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.banner = banner
        self._progress: dict[int, tuple[int, int]] = {}  # running job id -> (done, total)
        self._outage = False
        self._outage_done = 0  # images here when the outage began
        self._gave_up: GaveUp | None = None  # the last time the retry budget ran out
        self._failed: dict[int, JobOutcome] = {}  # job id -> how it ended
        self.shown_texts: list[str] = []  # every sentence the banner has shown, oldest first
        service.retry_event.connect(self.on_retry_event)
        service.job_started.connect(self.on_job_started)
        service.job_progress.connect(self.on_job_progress)
        service.job_finished.connect(self.on_job_finished)
        banner.retry_clicked.connect(self.retry)

    def _counts(self) -> str:
        if not self._progress:
            return ""
        done = sum(d for d, _ in self._progress.values())
        totals = [t for _, t in self._progress.values()]
        return counts_text(done, -1 if any(t < 0 for t in totals) else sum(totals))

    def _show_retrying(self) -> None:
        text = RETRYING_TEXT + self._counts()
        if self.banner.state != "retrying" or self.banner.text != text:
            self.banner.show_retrying(text)
            self.shown_texts.append(text)

    def _done(self) -> int:
        return sum(d for d, _ in self._progress.values())

    def on_retry_event(self, event: RetryEvent) -> None:
        if isinstance(event, AttemptFailed) and event.transient:
            if not self._outage:
                self._outage_done = self._done()
            self._outage = True
            self._show_retrying()
        elif isinstance(event, Resumed):
            self._outage = False
            if self.banner.state == "retrying":
                self.banner.dismiss()
        elif isinstance(event, GaveUp):
            self._outage = False
            self._gave_up = event
            if self.banner.state == "retrying" and not self._progress:  # a search: no job will say more
                self._show_failed(f"The PACS did not answer within the retry budget ({event.elapsed_s:.0f} s): "
                                  f"{event.reason}", can_retry=False)

    def on_job_started(self, job_id: int, study_uid: str, profile: str) -> None:
        self._progress.setdefault(job_id, (0, -1))
        self._failed.pop(job_id, None)
        if self.banner.state == "failed" and not self._failed:
            self.banner.dismiss()

    def on_job_progress(self, job_id: int, study_uid: str, done: int, total: int) -> None:
        self._progress[job_id] = (done, total)
        if self._outage and self._done() > self._outage_done:
            # Images arrive again: the transfer resumed (the engine's Resumed event may only come when the
            # attempt ends, e.g. after a whole-study C-GET).
            self._outage = False
        if self._outage:
            self._show_retrying()
        elif self.banner.state == "retrying":
            self.banner.dismiss()

    def on_job_finished(self, job_id: int, study_uid: str, outcome: JobOutcome) -> None:
        self._progress.pop(job_id, None)
        if not self._progress:
            self._outage = False
        if outcome.complete or outcome.cancelled:
            self._failed.pop(job_id, None)
            if self.banner.state == "retrying" and not self._progress:
                self.banner.dismiss()
            if self.banner.state == "failed" and not self._failed:
                self.banner.dismiss()
            return
        self._failed[job_id] = outcome
        counts = counts_text(outcome.held, outcome.expected)
        gave_up, self._gave_up = self._gave_up, None
        if gave_up is not None:  # the budget ran out: say so; the details are in the tooltip and the event log
            try:
                budget_s = self.service.profile(outcome.profile).retry.budget_s
            except MifasError:
                budget_s = gave_up.elapsed_s
            text = (f"The PACS did not come back within the retry budget ({budget_s:g} s); the "
                    f"retrieval from '{source_name(outcome.profile)}' stopped.{counts} Retry fetches only what "
                    "is missing.")
        else:
            text = (f"The retrieval from '{source_name(outcome.profile)}' stopped:{counts} {outcome.text} "
                    "Retry fetches only what is missing.")
        self._show_failed(text, can_retry=True)
        self.banner.setToolTip(outcome.text)

    def _show_failed(self, text: str, *, can_retry: bool) -> None:
        self.banner.show_failed(text, can_retry=can_retry)
        self.shown_texts.append(text)

    def retry(self) -> list[int]:
        """Run every failed job again (what is already here is not fetched again)."""
        failed, self._failed = list(self._failed), {}
        self.banner.dismiss()
        started = []
        for job_id in failed:
            try:
                started.append(self.service.retry_job(job_id))
            except MifasError as exc:  # said in the banner, never a dialog
                self._failed[job_id] = JobOutcome(job_id, "", None, "", False, False, None, None, str(exc))
                self._show_failed(f"The retrieval cannot be restarted: {exc}", can_retry=True)
        return started
