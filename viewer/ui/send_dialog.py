"""The Send to PACS dialog (File > Send to PACS…; the Studies panel's context menu): what to send (a study, the
selected series, the series of the active viewport, the key images) and where (a configured node or cluster
profile, as the Studies panel's Source list names them).

The send runs in a worker through :func:`viewer.share.send.send_instances` and the window's
:class:`~viewer.ui.retrieval_service.RetrievalService` client, so the retry, failover and resume of the retrieval
engine apply and their events reach the PACS health log and banner.  While the send runs, a failover is a line on
the dialog (the retry events), never an error dialog; the end is one sentence (:attr:`SendDialog.finished_text`,
shown on the window's status line): "Sent 300 images to orthanc; 0 already there."
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from viewer.errors import OperationCancelled
from viewer.ui.reading_ui import send_profile
from viewer.ui.workers import TaskHandle, TaskRunner, describe_error


def source_label(source) -> str:
    kind = "PACS cluster" if getattr(source, "vip", None) is not None else "PACS"
    return f"{kind}: {getattr(source, 'name', source)}"


def sent_sentence(result, name: str) -> str:
    """'Sent 300 images to orthanc; 0 already there.' (+ what was refused, and why it stopped)"""
    sent, held = len(result.sent), len(result.already_held)
    text = f"Sent {sent} image{'s' if sent != 1 else ''} to {name}; {held} already there"
    if result.refused:
        text += f"; {len(result.refused)} refused"
    text += "."
    if not result.complete and result.error:
        text += f" The send stopped: {result.error}"
    return text


def event_sentence(event) -> str | None:
    """A status line for a retry event of the send (None for the events not worth a line)."""
    from viewer.pacs.retry import AttemptFailed, GaveUp, Resumed

    if isinstance(event, AttemptFailed) and event.transient:
        return f"{event.node} did not answer ({event.reason}); trying again…"
    if isinstance(event, Resumed):
        return f"Sending again through {event.node}."
    if isinstance(event, GaveUp):
        return "The PACS did not come back within the retry budget."
    return None


class SendDialog(QDialog):
    """See the module docstring.  `window`: the MainWindow (its library, settings and retrieval service);
    `scopes`: :class:`viewer.ui.share_ui.Scope`; `sources`: nodes and cluster profiles."""

    finished_text = Signal(str)
    send_finished = Signal(object)  # the SendResult, or the exception

    def __init__(self, window, scopes, sources, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send to PACS")
        self.window_ = window
        self.scopes = list(scopes)
        self.sources = list(sources)
        self._runner = TaskRunner(self, max_threads=1, name="send")
        self._task: TaskHandle | None = None
        self.events: list[str] = []  # the retry lines shown during the send
        self._closed = False
        self.scope = QComboBox(self)
        for scope in self.scopes:
            self.scope.addItem(scope.label)
        self.target = QComboBox(self)
        for source in self.sources:
            self.target.addItem(source_label(source))
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.send_button = QPushButton("Send", self)
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel)
        form = QFormLayout()
        form.addRow("Send:", self.scope)
        form.addRow("To:", self.target)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(560, 200)
        window.retrievals.retry_event.connect(self._on_retry_event)

    @property
    def running(self) -> bool:
        return self._task is not None

    def _on_retry_event(self, event) -> None:
        if self._task is None:
            return
        text = event_sentence(event)
        if text:
            self.events.append(text)
            self.status.setText(text)

    def start(self) -> TaskHandle | None:
        if self._task is not None or not self.sources:
            return None

        source = self.sources[max(0, self.target.currentIndex())]
        name = getattr(source, "name", "the PACS")
        try:
            profile = send_profile(self.window_, source)
        except Exception as exc:  # a node that cannot be a destination: its sentence
            self.status.setText(describe_error(exc))
            return None
        scope = self.scopes[max(0, self.scope.currentIndex())]
        uids = tuple(scope.instances)
        library, retrievals = self.window_.library, self.window_.retrievals

        def work(progress, cancel):
            from viewer.share.send import send_instances

            client = retrievals.client(profile)
            return send_instances(library, client, uids, progress=progress, cancel=cancel)

        def progress(done: int, total: int) -> None:
            if total > 0:
                self.progress.setRange(0, total)
                self.progress.setValue(min(done, total))
            else:
                self.progress.setRange(0, 0)

        def done(result) -> None:
            text = sent_sentence(result, name)
            self.status.setText(text)
            self.finished_text.emit(text)
            self.send_finished.emit(result)
            if result.complete:
                self.accept()

        def failed(exc: BaseException) -> None:
            text = ("The send was cancelled." if isinstance(exc, OperationCancelled)
                    else f"The images were not sent to {name}: {describe_error(exc)}")
            self.status.setText(text)  # a status line, never an error dialog
            self.finished_text.emit(text)
            self.send_finished.emit(exc)

        def finished() -> None:
            self._task = None
            for widget in (self.send_button, self.scope, self.target):
                widget.setEnabled(True)

        for widget in (self.send_button, self.scope, self.target):
            widget.setEnabled(False)
        self.progress.setRange(0, max(1, len(uids)))
        self.progress.setValue(0)
        self.status.setText(f"Sending {len(uids)} images to {name}…")
        self._task = self._runner.submit(work, on_done=done, on_error=failed, on_progress=progress,
                                         on_finished=finished, name="send")
        return self._task

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.status.setText("Cancelling…")
        else:
            self.reject()

    def reject(self) -> None:
        if self._task is not None:
            self._task.cancel()
            return
        super().reject()

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.window_.retrievals.retry_event.disconnect(self._on_retry_event)
        self._runner.shutdown()
