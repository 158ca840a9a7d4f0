"""The library's record of the reading objects this program wrote (schema_v4.sql, no Qt): per SOP Instance UID
its study, kind (PR, SR, KO), the image series a presentation state applies to, and whether it was sent.

:mod:`viewer.reading.persist` replaces an unsent draft in place (:meth:`Library.replace_own`) and makes a new
instance once it was sent.  Uses the library's own connection under its lock (rows are tiny, writes short).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from viewer.errors import LibraryError
from viewer.library.store import Library


@dataclass(frozen=True)
class Draft:
    sop_instance_uid: str
    study_uid: str
    kind: str  # "PR", "SR" or "KO"
    image_series_uid: str  # of the images a presentation state applies to; "" for SR and KO
    sent: bool
    updated_at: float


def _run(library: Library, sql: str, args: tuple = ()) -> list[tuple]:
    with library._lock:
        try:
            return library._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise LibraryError(f"The library's list of saved readings could not be used: {exc}.") from exc


def current(library: Library, study_uid: str, kind: str, image_series_uid: str = "") -> Draft | None:
    """The newest of our objects of this kind for the study (and image series), sent or not, still held."""
    rows = _run(library, "SELECT d.sop_instance_uid, d.study_uid, d.kind, d.image_series_uid, d.sent, d.updated_at"
                " FROM reading_drafts d JOIN instances i USING(sop_instance_uid) WHERE d.study_uid=? AND d.kind=?"
                " AND d.image_series_uid=? ORDER BY d.updated_at DESC LIMIT 1", (study_uid, kind, image_series_uid))
    return Draft(*rows[0][:4], bool(rows[0][4]), rows[0][5]) if rows else None


def record(library: Library, sop_instance_uid: str, study_uid: str, kind: str, image_series_uid: str = "") -> None:
    """Note an object we just wrote (or rewrote): unsent, now."""
    _run(library, "INSERT INTO reading_drafts VALUES (?,?,?,?,0,?) ON CONFLICT(sop_instance_uid) DO UPDATE SET"
         " updated_at=excluded.updated_at", (sop_instance_uid, study_uid, kind, image_series_uid, time.time()))


def mark_sent(library: Library, sop_instance_uids: Iterable[str]) -> None:
    for uid in sop_instance_uids:
        _run(library, "UPDATE reading_drafts SET sent=1 WHERE sop_instance_uid=?", (uid,))


def of_study(library: Library, study_uid: str) -> list[Draft]:
    """Our objects of the study still held in the library, newest first."""
    rows = _run(library, "SELECT d.sop_instance_uid, d.study_uid, d.kind, d.image_series_uid, d.sent, d.updated_at"
                " FROM reading_drafts d JOIN instances i USING(sop_instance_uid) WHERE d.study_uid=?"
                " ORDER BY d.updated_at DESC", (study_uid,))
    return [Draft(*r[:4], bool(r[4]), r[5]) for r in rows]


def is_sent(library: Library, sop_instance_uid: str) -> bool:
    rows = _run(library, "SELECT sent FROM reading_drafts WHERE sop_instance_uid=?", (sop_instance_uid,))
    return bool(rows and rows[0][0])
