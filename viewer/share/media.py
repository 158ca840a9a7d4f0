"""Patient media (no Qt): a DICOMDIR folder ready to burn, and the viewer copied beside it.

The DICOMDIR and the file layout are pydicom's :class:`~pydicom.fileset.FileSet` (PS3.10 file-set, PS3.11 General
Purpose CD-R / DVD interchange): file IDs of up to 8 upper-case characters per component
(``PT000000/ST000000/SE000000/IM000000``), one PATIENT / STUDY / SERIES / IMAGE record per level.  Instances keep
the transfer syntax they are stored in (an image stored compressed stays compressed).  Values a record requires
and an image lacks (Study ID, most often) are filled in, in the file and its record alike (:func:`fill_record_keys`).

pydicom stages each added instance in a temporary folder before :meth:`FileSet.write` copies it into place; the
stage is put inside the export's own hidden partial folder (:class:`MediaWriter`), so it is private, on the target
disk, and removed with the partial folder whatever happens.

:func:`copy_viewer` copies the running installation (``sys.prefix``, a virtual environment made from the system's
Python) into ``VIEWER/`` and writes ``RUN-VIEWER.sh``, which opens the disc's DICOMDIR in a private library that is
removed when the viewer closes.  The copy runs where the same Python runs: Debian 12 class workstations with
``python3.11`` (the venv's interpreter is the system's, linked, not copied).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from viewer.private import PRIVATE_DIR, PRIVATE_FILE

LAUNCHER = "RUN-VIEWER.sh"
VIEWER_DIR = "VIEWER"
FILESET_ID = "MIFAS"
# What the viewer copy leaves out: the editable-install hooks of a development checkout (they point back at the
# checkout, which the disc will not have; the package itself is copied instead) and compiled caches of pip.
_EDITABLE_PREFIX = "__editable__"

_LAUNCHER_TEXT = """#!/bin/sh
# Opens this disc's images in MIFAS Viewer, copied onto the disc.  Runs on a Debian 12 class workstation with
# python3.11; the images are read into a private library that is removed when the viewer closes.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
lib=$(mktemp -d "${TMPDIR:-/tmp}/mifas-disc-XXXXXX") || exit 1
trap 'rm -rf "$lib"' EXIT INT TERM
python="$here/VIEWER/bin/python"
if ! "$python" -c '' 2>/dev/null; then
    # the disc lost the interpreter's link (a file system without links): the system's, with the copied packages
    python=python3.11
    PYTHONPATH="$(echo "$here"/VIEWER/lib/python3*/site-packages)"
    export PYTHONPATH
fi
"$python" -m viewer.ui.app --library "$lib" --open "$here/DICOMDIR" "$@"
"""


class MediaWriter:
    """One DICOMDIR file-set written into ``root`` (a new folder) when :meth:`finish` is called."""

    def __init__(self, root: Path, stage_parent: Path) -> None:
        from pydicom.fileset import FileSet

        self.root = Path(root)
        self.fileset = FileSet()
        self.fileset.ID = FILESET_ID
        self._stage_in(stage_parent)
        # pydicom's internals the fast add uses; a pydicom without them gets its own (slower) FileSet.add
        self._fast = all(hasattr(self.fileset, name) for name in ("_recordify", "_tree", "_instances", "_stage"))
        self._nodes: dict[tuple[str, ...], object] = {}  # (patient[, study[, series]]) keys -> their RecordNode

    def _stage_in(self, parent: Path) -> None:
        """Point pydicom's staging folder inside ``parent`` (what FileSet.clear() itself does with the system's
        temporary folder); pydicom versions whose stage looks otherwise keep theirs."""
        stage = getattr(self.fileset, "_stage", None)
        if isinstance(stage, dict) and isinstance(stage.get("t"), tempfile.TemporaryDirectory):
            stage["t"].cleanup()
            stage["t"] = tempfile.TemporaryDirectory(dir=parent)
            stage["path"] = Path(stage["t"].name)

    def add(self, ds, series_number: int, instance_number: int) -> None:
        """Stage one instance (a pydicom Dataset with its file meta, changed in place by :func:`fill_record_keys`);
        raises OSError, ValueError, KeyError."""
        fill_record_keys(ds, series_number, instance_number)
        if self._fast:
            self._add_fast(ds)
        else:
            self.fileset.add(ds)

    def _add_fast(self, ds) -> None:
        """``FileSet.add`` without its two scans that make a file-set's making grow with the square of its images
        (pydicom 3.0: every instance added is compared for a duplicate, and every sibling record's key is rebuilt
        to place the new one): the export adds each SOP Instance UID once, and the PATIENT / STUDY / SERIES nodes
        are found by their keys in a dict.  The same steps as ``FileSet.add`` otherwise; other record kinds (one
        level, private) take pydicom's own path."""
        from pydicom.fileset import FileInstance, RecordNode

        fileset = self.fileset
        records = list(fileset._recordify(ds))
        if len(records) != 4:
            fileset.add(ds)
            return
        nodes = [RecordNode(record) for record in records]
        for parent, child in zip(nodes, nodes[1:], strict=False):
            child.parent = parent
        keys = [node.key for node in nodes[:3]]
        depth = 3
        while depth and tuple(keys[:depth]) not in self._nodes:
            depth -= 1
        nodes[depth].parent = self._nodes[tuple(keys[:depth])] if depth else fileset._tree
        for level in range(depth, 3):
            self._nodes[tuple(keys[:level + 1])] = nodes[level]
        leaf = nodes[3]
        instance = FileInstance(leaf)
        leaf.instance = instance
        fileset._stage["+"][instance.SOPInstanceUID] = instance
        fileset._instances.append(instance)
        instance._apply_stage("+")
        ds.save_as(instance.path, enforce_file_format=True)

    def __len__(self) -> int:
        return len(self.fileset)

    def finish(self) -> None:
        """Write the instances and the DICOMDIR into ``root``, then make them private (0600 / 0700)."""
        self.fileset.write(self.root)
        make_private(self.root)


def fill_record_keys(ds, series_number: int, instance_number: int) -> None:
    """Give ``ds`` the values its DICOMDIR records must have (PS3.3 F.5, Type 1) where it has none, as DCMTK's
    ``dcmmkdir --invent`` does: many images leave Study ID (Type 2 in the image) empty.  The file on the media then
    carries the same value as its record.  Values present are never changed."""
    def empty(keyword: str) -> bool:
        return keyword not in ds or ds[keyword].VM == 0

    if empty("PatientID"):
        ds.PatientID = "UNKNOWN"
    if empty("StudyDate"):
        ds.StudyDate = next((str(ds[k].value) for k in ("SeriesDate", "AcquisitionDate", "ContentDate")
                             if not empty(k)), "19000101")
    if empty("StudyTime"):
        ds.StudyTime = next((str(ds[k].value) for k in ("SeriesTime", "AcquisitionTime", "ContentTime")
                             if not empty(k)), "000000")
    if empty("StudyID"):
        ds.StudyID = "1"
    if empty("Modality"):
        ds.Modality = "OT"
    if empty("SeriesNumber"):
        ds.SeriesNumber = series_number
    if empty("InstanceNumber"):
        ds.InstanceNumber = instance_number


def make_private(root: Path) -> None:
    """Folders 0700 and files 0600 under ``root`` (pydicom creates them with the umask's modes)."""
    os.chmod(root, PRIVATE_DIR)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), PRIVATE_DIR)
        for name in files:
            os.chmod(os.path.join(folder, name), PRIVATE_FILE)


def record_counts(dicomdir: Path) -> dict[str, int]:
    """How many directory records of each type (PATIENT, STUDY, SERIES, IMAGE, ...) a DICOMDIR holds."""
    import pydicom

    counts: dict[str, int] = {}
    for record in pydicom.dcmread(dicomdir).DirectoryRecordSequence:
        kind = str(record.DirectoryRecordType)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def copy_viewer(root: Path, prefix: Path | None = None) -> Path:
    """Copy the viewer's installation (``prefix``, default ``sys.prefix``: a venv) into ``root/VIEWER`` and write
    ``root/RUN-VIEWER.sh``; returns the launcher's path.  When the ``viewer`` package does not live inside the
    installation (an editable development install), it is copied into the copy's site-packages.  Raises OSError."""
    prefix = Path(prefix or sys.prefix)
    target = Path(root) / VIEWER_DIR
    shutil.copytree(prefix, target, symlinks=True, ignore=_ignored)
    package = Path(__file__).resolve().parents[1]  # .../viewer
    if prefix.resolve() not in package.parents:
        site = _site_packages(target)
        shutil.copytree(package, site / "viewer", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    launcher = Path(root) / LAUNCHER
    fd = os.open(launcher, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_DIR)
    with os.fdopen(fd, "w") as fp:
        fp.write(_LAUNCHER_TEXT)
    os.chmod(launcher, PRIVATE_DIR)  # rwx for the user
    return launcher


def _ignored(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n.startswith(_EDITABLE_PREFIX)}


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if found:
        return found[0]
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    return site


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (links not followed)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
