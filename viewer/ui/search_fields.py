"""The study search fields shared by the local browser and the PACS panel."""

from __future__ import annotations

import re

from PySide6.QtCore import QRegularExpression, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QWidget

from viewer.library import StudyQuery

MODALITIES = ("", "CT", "MR", "CR", "DX", "US", "PT", "NM", "XA", "MG", "RF", "OT", "SC")
_DATE_RE = re.compile(r"^\d{8}$")
FIELD_CHARS_MAX = 64  # PS3.5 6.2: PN components and LO values are at most 64 characters


class SearchFields(QWidget):
    """Patient name, patient ID, study date from/to, modality, accession number and a Search button.

    ``search_requested`` fires on the button and on Enter in any field.  Dates are typed as YYYYMMDD or
    YYYY-MM-DD; an incomplete date is ignored (and shown as invalid).
    """

    search_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.patient_name = self._line("Name (wildcards * ?)")
        self.patient_id = self._line("Patient ID")
        self.accession = self._line("Accession number")
        self.date_from = self._date("from YYYYMMDD")
        self.date_to = self._date("to YYYYMMDD")
        self.modality = QComboBox(self)
        self.modality.setEditable(True)
        self.modality.addItems(MODALITIES)
        self.modality.lineEdit().setPlaceholderText("any")
        self.modality.lineEdit().setMaxLength(16)
        self.modality.lineEdit().returnPressed.connect(self.search_requested)
        self.search_button = QPushButton("Search", self)
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search_requested)
        dates = QHBoxLayout()
        dates.setContentsMargins(0, 0, 0, 0)
        dates.addWidget(self.date_from)
        dates.addWidget(self.date_to)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Patient", self.patient_name)
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Study date", dates)
        form.addRow("Modality", self.modality)
        form.addRow("Accession", self.accession)
        form.addRow("", self.search_button)

    def _line(self, placeholder: str) -> QLineEdit:
        edit = QLineEdit(self)
        edit.setPlaceholderText(placeholder)
        edit.setMaxLength(FIELD_CHARS_MAX)
        edit.setClearButtonEnabled(True)
        edit.returnPressed.connect(self.search_requested)
        return edit

    def _date(self, placeholder: str) -> QLineEdit:
        edit = self._line(placeholder)
        edit.setMaxLength(10)
        edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"^\d{0,4}-?\d{0,2}-?\d{0,2}$"), edit))
        return edit

    @staticmethod
    def _date_value(edit: QLineEdit) -> str:
        text = edit.text().replace("-", "").strip()
        return text if _DATE_RE.match(text) else ""

    def query(self) -> StudyQuery:
        """The fields as a library query."""
        return StudyQuery(
            patient_name=self.patient_name.text().strip(),
            patient_id=self.patient_id.text().strip(),
            accession_number=self.accession.text().strip(),
            modality=self.modality.currentText().strip().upper(),
            date_from=self._date_value(self.date_from),
            date_to=self._date_value(self.date_to),
        )

    def set_query(self, query: StudyQuery) -> None:
        self.patient_name.setText(query.patient_name)
        self.patient_id.setText(query.patient_id)
        self.accession.setText(query.accession_number)
        self.modality.setCurrentText(query.modality)
        self.date_from.setText(query.date_from)
        self.date_to.setText(query.date_to)

    def dicom_keys(self) -> dict[str, str]:
        """The fields as C-FIND / QIDO-RS matching keys (PS3.4 C.2.2.2): DICOM keywords to values, empty
        fields left out; a date range is ``from-to`` (PS3.4 C.2.2.2.5)."""
        q = self.query()
        keys: dict[str, str] = {}
        if q.patient_name:
            name = q.patient_name
            keys["PatientName"] = name if any(c in name for c in "*?") else f"*{name}*"
        if q.patient_id:
            keys["PatientID"] = q.patient_id
        if q.accession_number:
            keys["AccessionNumber"] = q.accession_number
        if q.modality:
            keys["ModalitiesInStudy"] = q.modality
        if q.date_from or q.date_to:
            keys["StudyDate"] = q.date_from if q.date_from == q.date_to else f"{q.date_from}-{q.date_to}"
        return keys
