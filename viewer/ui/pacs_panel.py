"""A PACS source as a browser page: a single node or a cluster profile; query its studies, retrieve them into
the local library.

Queries run in the panel's own worker (``open_client(...).find`` for a node, the retry engine's ``find`` for a
cluster).  Every retrieval, from a node or a cluster alike, is a persisted job of the window's
:class:`~viewer.ui.retrieval_service.RetrievalService`: the one engine (``viewer.pacs.retrieve``), which survives
the panel, resumes after a restart and can be retried from the failover banner.  The panel only shows results,
progress and, when something fails, the error's sentence in its status line: never a blocking dialog, never a
traceback.  What arrived before a cancel or a failure stays in the library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from viewer.errors import MifasError, OperationCancelled
from viewer.library import Library, is_valid_uid
from viewer.pacs.client import open_client
from viewer.pacs.cluster import ClusterProfile, node_source
from viewer.pacs.node import Node
from viewer.pacs.retrieve import OPERATION
from viewer.ui.formatting import format_date, format_name
from viewer.ui.retrieval_service import JobOutcome, RetrievalService
from viewer.ui.search_fields import SearchFields
from viewer.ui.table_model import RowTableModel
from viewer.ui.workers import TaskRunner, describe_error

log = logging.getLogger(__name__)

VIA_LABELS = {"get": "C-GET", "move": "C-MOVE", "wado": "DICOMweb (WADO-RS)"}
CLUSTER_VIA = "cluster"
QUERY_RESULTS_MAX = 2000  # studies one query lists; the status line says when the node had more
ERROR_STYLE = "color: #b00020;"


class StudyResultsModel(RowTableModel[dict[str, str]]):
    COLUMNS = ("Patient", "Patient ID", "Date", "Description", "Modalities", "Accession", "Images", "Local")

    def __init__(self, held: Callable[[str], bool], parent=None) -> None:
        super().__init__(parent)
        self._held = held  # study UID -> already in the local library?

    def row(self, index: int) -> dict[str, str]:
        return self._rows[index]

    def refresh_local(self) -> None:
        if self._rows:
            column = len(self.COLUMNS) - 1
            self.dataChanged.emit(self.index(0, column), self.index(len(self._rows) - 1, column))

    def cell(self, r: dict[str, str], column: int) -> str:
        if column == 7:
            return "yes" if self._held(r.get("StudyInstanceUID", "")) else ""
        return (format_name(r.get("PatientName", "")), r.get("PatientID", ""), format_date(r.get("StudyDate", "")),
                r.get("StudyDescription", ""), r.get("ModalitiesInStudy", "").replace("\\", ", "),
                r.get("AccessionNumber", ""), r.get("NumberOfStudyRelatedInstances", ""))[column]


class PacsPanel(QWidget):
    """Search one source (a :class:`Node` or a :class:`ClusterProfile`) and retrieve studies into ``library`` as
    jobs of ``service``.

    ``retrieved(study_uid)`` fires when images of a study have reached the library (as soon as the first arrive,
    and again when the retrieval ends, however it ends), so the local browser can show them.
    """

    retrieved = Signal(str)

    def __init__(self, source: Node | ClusterProfile, library: Library, service: RetrievalService,
                 parent: QWidget | None = None, *, via: str = "get", move_port: int | None = None) -> None:
        super().__init__(parent)
        self.node = source  # a Node, or a ClusterProfile (named node for the browser's list)
        self.library = library
        self.service = service
        self.move_port = move_port
        self._job_ids: set[int] = set()
        self._announced: set[int] = set()
        self.title = QLabel(self._title_text(), self)
        self.search = SearchFields(self)
        self.search.search_requested.connect(self.run_query)
        self.via = QComboBox(self)
        for key, label in self._via_choices():
            self.via.addItem(label, key)
        found = self.via.findData(via)
        self.via.setCurrentIndex(found if found >= 0 else 0)
        self.results = StudyResultsModel(self._held, self)
        self.table = QTableView(self)
        self.table.setModel(self.results)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._update_buttons)
        self.table.activated.connect(lambda _index: self.retrieve_selected())
        self.retrieve_button = QPushButton("Retrieve", self)
        self.retrieve_button.setToolTip("Copy the selected studies into the local library")
        self.retrieve_button.clicked.connect(self.retrieve_selected)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        via_row = QHBoxLayout()
        via_row.addWidget(QLabel("Retrieve with", self))
        via_row.addWidget(self.via, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retrieve_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.search)
        layout.addLayout(via_row)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self._queries = TaskRunner(self, max_threads=1, name="pacs query")
        self._query_task = None
        service.job_started.connect(self._on_job_started)
        service.job_progress.connect(self._on_job_progress)
        service.job_finished.connect(self._on_job_finished)
        self._query_serial = 0
        self._update_buttons()

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.node, ClusterProfile)

    def _title_text(self) -> str:
        if isinstance(self.node, ClusterProfile):
            return f"<b>{_escape(self.node.name)}</b> — {_escape(describe_profile(self.node))}"
        return f"<b>{_escape(self.node.name)}</b> — {_escape(self.node.describe())}"

    def _via_choices(self) -> list[tuple[str, str]]:
        if isinstance(self.node, ClusterProfile):
            order = " → ".join(OPERATION[m] for m in self.node.retrievals())
            return [(CLUSTER_VIA, f"{order} (the profile's order)")]
        return [(key, label) for key, label in VIA_LABELS.items() if key != "wado" or self.node.dicomweb_url]

    def _query_client(self, via: str):
        """A client with ``find`` and ``close``, made in the query worker."""
        if isinstance(self.node, ClusterProfile):
            return self.service.client(self.node)
        return open_client(self.node, via)

    def source_profile(self) -> ClusterProfile:
        """What a retrieval runs against: the cluster, or the node as a cluster of one with the chosen method."""
        if isinstance(self.node, ClusterProfile):
            return self.node
        kwargs = {"move_port": self.move_port} if self.move_port else {}
        return ClusterProfile.of_node(self.node, self.selected_via, **kwargs)

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def selected_via(self) -> str:
        return str(self.via.currentData())

    @property
    def busy(self) -> bool:
        query = self._query_task is not None and self._query_task.running
        return query or bool(self._job_ids & set(self.service.running_jobs()))

    def _held(self, study_uid: str) -> bool:
        try:
            return bool(study_uid) and self.library.study(study_uid) is not None
        except Exception:  # the library is the local disk; a failure here must not break painting
            return False

    def _update_buttons(self, *_: object) -> None:
        self.retrieve_button.setEnabled(bool(self.table.selectionModel().selectedRows()))
        self.cancel_button.setEnabled(self.busy)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    # -- query -----------------------------------------------------------------------------------------------

    def run_query(self) -> None:
        """C-FIND (or QIDO-RS with DICOMweb) at study level with the search fields, in a worker."""
        if self._query_task is not None:
            self._query_task.cancel()  # the newest search wins
        self._query_serial += 1
        serial = self._query_serial
        make_client, via, keys = self._query_client, self.selected_via, self.search.dicom_keys()
        query_via = "wado" if via == "wado" else "get"  # C-FIND does not depend on C-GET vs C-MOVE

        node = self.node

        def query(progress, cancel):
            from viewer.audit.transfers import audited_query

            client = make_client(query_via)
            try:
                with audited_query(node, "study", keys):  # the audit trail's Query message
                    return client.find("study", keys, cancel=cancel, limit=QUERY_RESULTS_MAX)
            finally:
                client.close()

        def done(rows: list[dict[str, str]]) -> None:
            if serial != self._query_serial:
                return
            truncated = getattr(rows, "truncated", False) or len(rows) >= QUERY_RESULTS_MAX
            rows = [r for r in rows if is_valid_uid(r.get("StudyInstanceUID"))]
            rows.sort(key=lambda r: (r.get("StudyDate", ""), r.get("StudyTime", "")), reverse=True)
            self.results.set_rows(rows)
            self.table.resizeColumnsToContents()
            more = " (the node holds more: only the first ones are shown; narrow the search)" if truncated else ""
            self._say(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} found on {self.node.name}{more}.")

        def failed(exc: BaseException) -> None:
            if serial == self._query_serial and not isinstance(exc, OperationCancelled):
                self._say(describe_error(exc), error=True)

        def finished() -> None:
            self._update_buttons()

        self._say(f"Searching {self.node.name}…")
        self._query_task = self._queries.submit(query, on_done=done, on_error=failed, on_finished=finished,
                                                name="pacs query")
        self._update_buttons()

    # -- retrieve --------------------------------------------------------------------------------------------

    def selected_study_uids(self) -> list[str]:
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.results.row(r)["StudyInstanceUID"] for r in rows]

    def retrieve_selected(self) -> None:
        for study_uid in self.selected_study_uids():
            self.retrieve(study_uid)

    def retrieve(self, study_uid: str, series_uid: str | None = None) -> int | None:
        """Queue the retrieval of a study (or one series) as a persisted job; its id (None when it cannot be
        queued: the reason is in the status line)."""
        try:
            job_id = self.service.start_job(self.source_profile(), study_uid, series_uid)
        except MifasError as exc:
            self._say(str(exc), error=True)
            return None
        log.info("retrieving study %s from %s (job %d)", study_uid, self.node.name, job_id)
        self._job_ids.add(job_id)
        self._announced.discard(job_id)
        self._say(f"Retrieving from {self.node.name}…")
        self._update_buttons()
        return job_id

    def _mine(self, profile: str) -> bool:
        if isinstance(self.node, ClusterProfile):
            return profile == self.node.name
        single = node_source(profile)
        return single is not None and single[1] == self.node.name

    def _on_job_started(self, job_id: int, study_uid: str, profile: str) -> None:
        if self._mine(profile) and job_id not in self._job_ids:  # started elsewhere: Retry, resume
            self._job_ids.add(job_id)
            self._announced.discard(job_id)
            self._say(f"Retrieving from {self.node.name}…")
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
            self._say(f"Retrieved from {self.node.name}: {outcome.text}")
        else:
            self._say(f"The retrieval from {self.node.name} stopped: {outcome.text}", error=True)
        if not self._job_ids:
            self.progress.hide()
        self.results.refresh_local()
        self._update_buttons()
        self.retrieved.emit(study_uid)

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.show()
        if total < 0:
            self.progress.setRange(0, 0)  # the node did not say how many: a busy bar
            self.progress.setFormat(f"{done} image(s)")
        else:
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(min(done, max(total, 1)))
            self.progress.setFormat(f"{done}/{total} images")

    def cancel(self) -> None:
        """Cancel the running query and this panel's retrievals (they stay pending and resume next time)."""
        if self._query_task is not None:
            self._query_task.cancel()
        for job_id in self._job_ids:
            self.service.cancel_job(job_id)
        if self._job_ids:
            self._say("Cancelling…")

    def shutdown(self) -> None:
        self._queries.shutdown()


def describe_profile(profile: ClusterProfile) -> str:
    members = ", ".join(a.name or a.host for a in profile.members) or "no members"
    return (f"cluster: virtual IP {profile.vip.host}:{profile.vip.port}, AE {profile.ae_title}; members {members}; "
            f"retry budget {profile.retry.budget_s:g} s")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
