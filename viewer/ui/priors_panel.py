"""The "Priors" dock: the open study's prior studies (:mod:`viewer.reading.priors`) and Compare.

When the window opens a study (``study_opened``), the panel searches the local library and every configured
source (the cluster profiles and the settings' nodes, through the retrieval service's ResilientClient) in its
own worker, never on the GUI thread, and lists what it finds as it comes: date, modality, description and where
the study is.  Studies with the same name and birth date but a Patient ID from another issuer are listed apart
and need a confirmation (a non-blocking question naming the name, birth date, ID and issuer) before Compare.

Compare: a prior already in the library is laid out at once (``window.open_study(current, prior_uid=...)``).
Otherwise its series are listed on its source (SERIES-level C-FIND, in a worker), ordered by
:func:`~viewer.reading.priors.relevance_order` against the series on screen, and retrieved one job per series in
that order by the window's :class:`~viewer.ui.retrieval_service.RetrievalService` (its jobs run one after
another); the comparison is laid out as soon as the first series with images is in, and the rest fills in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.errors import MifasError, OperationCancelled, PacsError
from viewer.pacs.cluster import ClusterProfile
from viewer.reading.priors import (
    Patient,
    PriorSearch,
    PriorStudy,
    SeriesInfo,
    Source,
    find_priors,
    relevance_order,
)
from viewer.ui.formatting import format_date, format_name
from viewer.ui.retrieval_service import JobOutcome, RetrievalService
from viewer.ui.workers import TaskHandle, TaskRunner, describe_error

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #b00020;"
CONFIRM_GROUP = "Same name and birth date, different ID issuer: confirm"
COLUMNS = ("Date", "Modality", "Description", "Where", "Patient")


def prior_sources(service: RetrievalService, settings: Any = None) -> list[tuple[Source, ClusterProfile]]:
    """The configured PACS sources: every cluster profile, then every node of the settings (as a cluster of one
    with the settings' retrieval method)."""
    found: list[tuple[Source, ClusterProfile]] = []
    for name in service.profile_names():
        try:
            found.append((_source(service, service.profile(name), name), service.profile(name)))
        except MifasError as exc:
            log.warning("cluster profile skipped for prior searches: %s", exc)
    via = getattr(settings, "default_via", "get") or "get"
    for node in list(getattr(settings, "nodes", []) or service.nodes):
        try:
            profile = ClusterProfile.of_node(node, via, move_port=service.move_port)
        except PacsError:
            profile = ClusterProfile.of_node(node, "get", move_port=service.move_port)
        found.append((_source(service, profile, node.name), profile))
    return found


def _source(service: RetrievalService, profile: ClusterProfile, name: str) -> Source:
    return Source(f"PACS {name}", lambda: service.client(profile), audit_as=profile)


@dataclass
class _Comparison:
    """A Compare in progress: the prior, its retrieval jobs in relevance order, and whether it is laid out."""

    current: str
    prior: PriorStudy
    label: str = ""
    jobs: tuple[int, ...] = ()
    finished: int = 0
    laid_out: bool = False


class PriorsPanel(QWidget):
    """See the module docstring.  ``window`` is the MainWindow (its library, retrieval service, settings,
    ``study_opened`` signal, ``open_study``, and the series its viewports show)."""

    search_finished = Signal(object)  # the complete PriorSearch
    compared = Signal(str, str)  # current study UID, prior study UID: laid out side by side
    _interim = Signal(int, object)  # search serial, PriorSearch (emitted by the worker: queued)

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.window = window
        self.library = window.library
        self.service: RetrievalService = window.retrievals
        self.current_uid: str | None = None
        self.result: PriorSearch | None = None
        self.comparison: _Comparison | None = None
        self.confirm_box: QMessageBox | None = None
        self._serial = 0
        self._laying_out = False  # Compare is calling open_study
        self._search: TaskHandle | None = None
        self._sources: dict[str, ClusterProfile] = {}
        self.title = QLabel("", self)
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemActivated.connect(lambda *_: self.compare_selected())
        self.priors_group = QTreeWidgetItem(self.tree, ["Priors"])
        self.confirm_group = QTreeWidgetItem(self.tree, [CONFIRM_GROUP])
        for group in (self.priors_group, self.confirm_group):
            group.setFlags(Qt.ItemFlag.ItemIsEnabled)
            group.setFirstColumnSpanned(True)
        self.confirm_group.setHidden(True)
        self.compare_button = QPushButton("Compare", self)
        self.compare_button.setToolTip("Show the selected prior beside the open study (retrieved if needed)")
        self.compare_button.clicked.connect(self.compare_selected)
        self.status = QLabel("Open a study to see its priors.", self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.compare_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self._runner = TaskRunner(self, max_threads=2, name="prior studies")
        self._interim.connect(self._on_interim)
        window.study_opened.connect(self.on_study_opened)
        self.service.job_finished.connect(self._on_job_finished)
        self._update_buttons()

    # -- search ----------------------------------------------------------------------------------------------

    def on_study_opened(self, study_uid: str) -> None:
        """A study was laid out: search its priors (not when Compare laid it out again beside its prior: the
        list and the comparison stay)."""
        if self._laying_out:
            return
        self.search(study_uid)

    def search(self, study_uid: str) -> TaskHandle:
        """Search the priors of `study_uid` in a worker; the list fills as the library and each source answer."""
        if self._search is not None:
            self._search.cancel()  # the newest study wins
        self._serial += 1
        serial = self._serial
        self.current_uid = study_uid
        self.comparison = None
        self.result = None
        self._show(PriorSearch(complete=False))
        self._say("Looking for prior studies of this patient…")
        sources = prior_sources(self.service, getattr(self.window, "settings", None))
        self._sources = {source.label: profile for source, profile in sources}
        library, emit = self.library, self._interim.emit

        def work(progress, cancel):
            record = library.study(study_uid)
            if record is None:
                raise MifasError("The open study is not in the local library.")
            return find_priors(study_uid, Patient.of_record(record), library, [s for s, _ in sources],
                               cancel=cancel, on_update=lambda interim: emit(serial, interim))

        def done(result: PriorSearch) -> None:
            if serial == self._serial:
                self._on_interim(serial, result)

        def failed(exc: BaseException) -> None:
            if serial == self._serial and not isinstance(exc, OperationCancelled):
                self._say(describe_error(exc), error=True)

        self._search = self._runner.submit(work, on_done=done, on_error=failed, name="prior search")
        return self._search

    def _on_interim(self, serial: int, result: PriorSearch) -> None:
        if serial != self._serial or (self.result is not None and self.result.complete):
            return
        self.result = result
        self._show(result)
        self._say(self.describe(result), error=bool(result.notes) and result.complete)
        if result.complete:
            self.search_finished.emit(result)

    @staticmethod
    def describe(result: PriorSearch) -> str:
        """The status sentence of a search."""
        count, local = len(result.priors), sum(1 for p in result.priors if p.local)
        if count:
            text = f"{count} prior stud{'y' if count == 1 else 'ies'} of this patient ({local} in the library)"
        else:
            text = "No prior study of this patient" + ("" if result.complete else " yet")
        if result.to_confirm:
            text += f"; {len(result.to_confirm)} to confirm (same name and birth date, different ID issuer)"
        text += "." if result.complete else "; still searching…"
        if result.truncated:
            text += " More studies matched than are listed."
        return " ".join([text, *result.notes])

    def _show(self, result: PriorSearch) -> None:
        selected = self.selected_prior()
        for group, studies in ((self.priors_group, result.priors), (self.confirm_group, result.to_confirm)):
            group.takeChildren()
            for study in studies:
                item = QTreeWidgetItem(group, self._cells(study))
                item.setData(0, Qt.ItemDataRole.UserRole, study)
                if selected is not None and study.study_uid == selected.study_uid:
                    item.setSelected(True)
            group.setExpanded(True)
        self.priors_group.setText(0, f"Priors ({len(result.priors)})")
        self.confirm_group.setText(0, f"{CONFIRM_GROUP} ({len(result.to_confirm)})")
        self.confirm_group.setHidden(not result.to_confirm)
        for column in range(len(COLUMNS) - 1):
            self.tree.resizeColumnToContents(column)
        self._update_buttons()

    @staticmethod
    def _cells(study: PriorStudy) -> list[str]:
        patient = ""
        if study.match != "prior":
            p = study.patient
            patient = (f"{format_name(p.name)}, born {format_date(p.birth_date)}, ID {p.patient_id} "
                       f"({p.issuer or 'no issuer'})")
        return [format_date(study.study_date), ", ".join(study.modalities), study.description, study.where, patient]

    # -- selection and Compare -------------------------------------------------------------------------------

    def studies(self, group: QTreeWidgetItem | None = None) -> list[PriorStudy]:
        """The listed studies (of one group, or all)."""
        groups = [group] if group is not None else [self.priors_group, self.confirm_group]
        return [g.child(i).data(0, Qt.ItemDataRole.UserRole) for g in groups for i in range(g.childCount())]

    def select(self, study_uid: str) -> bool:
        for group in (self.priors_group, self.confirm_group):
            for i in range(group.childCount()):
                item = group.child(i)
                if item.data(0, Qt.ItemDataRole.UserRole).study_uid == study_uid:
                    self.tree.setCurrentItem(item)
                    return True
        return False

    def selected_prior(self) -> PriorStudy | None:
        items = self.tree.selectedItems()
        study = items[0].data(0, Qt.ItemDataRole.UserRole) if items else None
        return study if isinstance(study, PriorStudy) else None

    def _update_buttons(self) -> None:
        self.compare_button.setEnabled(self.selected_prior() is not None and self.current_uid is not None)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    def compare_selected(self) -> None:
        prior = self.selected_prior()
        if prior is None or self.current_uid is None:
            return
        if prior.match == "prior":
            self.compare(prior)
            return
        p = prior.patient
        box = QMessageBox(QMessageBox.Icon.Question, "Confirm the patient",
                          f"This study's Patient ID comes from another issuer ({p.issuer or 'none'}).\n\n"
                          f"Name: {format_name(p.name)}\nBirth date: {format_date(p.birth_date)}\n"
                          f"ID: {p.patient_id}\n\nIs it the same patient as the open study?",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.accepted.connect(lambda: self.compare(prior))  # Yes is the accepting button
        self.confirm_box = box
        box.open()

    def compare(self, prior: PriorStudy) -> None:
        """Lay out `prior` beside the open study, retrieving it first (most relevant series first) when it is
        not in the library."""
        current = self.current_uid
        if current is None:
            return
        self.comparison = _Comparison(current, prior)
        when = format_date(prior.study_date) or "an unknown date"
        if prior.local:
            self._lay_out()
            return
        label = next((s for s in prior.sources if s in self._sources), None)
        if label is None:
            self._say("That study is on no source configured now.", error=True)
            return
        self.comparison.label = label
        profile = self._sources[label]
        shown = self._shown_series()
        service, comparison = self.service, self.comparison
        self._say(f"Listing the series of the study of {when} on {label}…")

        def work(progress, cancel):
            client = service.client(profile)
            try:
                rows = client.find("series", {"StudyInstanceUID": prior.study_uid}, cancel=cancel)
            finally:
                client.close()
            return [SeriesInfo.of(r) for r in rows if r.get("SeriesInstanceUID")]

        def start(series: list[SeriesInfo] | None) -> None:
            if self.comparison is not comparison:
                return
            ordered = relevance_order(series or [], shown)
            try:
                if ordered:
                    comparison.jobs = tuple(dict.fromkeys(service.start_job(profile, prior.study_uid, s.series_uid)
                                                          for s in ordered))
                else:  # the source did not list the series: one job for the study
                    comparison.jobs = (service.start_job(profile, prior.study_uid),)
            except MifasError as exc:
                self._say(str(exc), error=True)
                return
            what = f"{len(ordered)} series, the most relevant first" if ordered else "the whole study"
            self._say(f"Retrieving the study of {when} from {label} ({what})…")

        def listing_failed(exc: BaseException) -> None:
            if not isinstance(exc, OperationCancelled):
                log.info("series of a prior not listed (%s); retrieving the study whole", type(exc).__name__)
                start(None)

        self._runner.submit(work, on_done=start, on_error=listing_failed, name="prior series")

    def _shown_series(self) -> list[SeriesInfo]:
        """The open study's series on screen (the window's viewports), the active viewport's first."""
        series_of = getattr(self.window, "_series_uids", {})
        active = series_of.get(getattr(self.window, "viewport", None))
        uids = list(dict.fromkeys([u for u in (active, *series_of.values()) if u]))
        shown = []
        for uid in uids:
            record = self.library.series_record(uid)
            if record is not None and record.study_uid == self.current_uid:
                shown.append(SeriesInfo(uid, record.modality, record.body_part, record.series_description,
                                        record.series_number))
        return shown

    def _on_job_finished(self, job_id: int, study_uid: str, outcome: JobOutcome) -> None:
        comparison = self.comparison
        if comparison is None or job_id not in comparison.jobs:
            return
        comparison.finished += 1
        if not comparison.laid_out and (outcome.held or 0) > 0:
            self._lay_out()  # the most relevant series with images is in: show it, the rest fills in
        if comparison.finished < len(comparison.jobs):
            return
        if not comparison.laid_out:
            self._say(f"The prior could not be retrieved from {comparison.label}: {outcome.text}", error=True)
        elif outcome.complete:
            self._say(f"The prior of {format_date(comparison.prior.study_date)} is in the library and shown beside "
                      "the open study.")
        else:
            self._say(f"The prior is shown, but its retrieval stopped: {outcome.text}", error=True)

    def _lay_out(self) -> None:
        comparison = self.comparison
        if comparison is None or comparison.laid_out:
            return
        comparison.laid_out = True
        when = format_date(comparison.prior.study_date) or "an unknown date"
        self._laying_out = True
        try:
            shown = self.window.open_study(comparison.current, prior_uid=comparison.prior.study_uid)
        finally:
            self._laying_out = False
        if shown:
            self._say(f"Comparing with the study of {when}.")
            self.compared.emit(comparison.current, comparison.prior.study_uid)

    def shutdown(self) -> None:
        self._runner.shutdown()


def attach_priors(window: Any) -> PriorsPanel:
    """Build the Priors dock of `window` (a MainWindow): tabbed with the Studies dock (the Studies tab stays in
    front; the Priors tab shows how many were found), with its toggle in the View menu."""
    panel = PriorsPanel(window)
    dock = QDockWidget("Priors", window)
    dock.setObjectName("priors")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    window.tabifyDockWidget(window.browser_dock, dock)
    window.browser_dock.raise_()

    def count(result: PriorSearch) -> None:
        found = len(result.priors) + len(result.to_confirm)
        dock.setWindowTitle(f"Priors ({found})" if found else "Priors")

    panel.search_finished.connect(count)
    action = dock.toggleViewAction()
    action.setText("&Priors")
    view_menu = getattr(window, "view_menu", None)
    if view_menu is not None:
        view_menu.addAction(action)
    window.priors_dock = dock
    return panel
