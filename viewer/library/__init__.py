"""The local study store (no Qt): an SQLite index plus files under minted names."""

from viewer.library.header import read_header
from viewer.library.importer import ImportFailure, ImportSummary, expand_paths, import_paths
from viewer.library.store import (
    InstanceRecord,
    Library,
    SeriesRecord,
    StoreResult,
    StudyQuery,
    StudyRecord,
    is_valid_uid,
)

__all__ = [
    "ImportFailure", "ImportSummary", "InstanceRecord", "Library", "SeriesRecord", "StoreResult", "StudyQuery",
    "StudyRecord", "expand_paths", "import_paths", "is_valid_uid", "read_header",
]
