"""Helpers of the saved-reading tests (GSPS, SR, KOS): a library holding a small CT study, the marks of every
measurement kind on it, and dciodvfy's verdict on a file."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pacs.conftest import ct_series, part10
from viewer.library import Library
from viewer.reading.annotations import Annotation, AnnotationStore

DCIODVFY = "/usr/bin/dciodvfy"


@dataclass
class Study:
    library: Library
    study_uid: str
    series_uid: str
    uids: list[str]


def make_study(root: Path, count: int = 3, seed: int = 1) -> Study:
    library = Library(root)
    datasets = ct_series(count, seed=seed)
    for ds in datasets:
        library.store_bytes(part10(ds))
    return Study(library, str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID),
                 [str(ds.SOPInstanceUID) for ds in datasets])


def every_kind(uids: list[str]) -> list[Annotation]:
    """One annotation of each kind, on the study's first images, at fractional points."""
    return [
        Annotation("distance", (uids[0], 0), ((3.0, 4.0), (10.25, 20.5))),
        Annotation("angle", (uids[0], 0), ((30.0, 30.0), (10.0, 30.0), (30.0, 50.0))),
        Annotation("rectangle", (uids[1], 0), ((40.0, 40.0), (20.0, 10.0))),
        Annotation("ellipse", (uids[1], 0), ((50.0, 5.0), (40.0, 30.0))),
        Annotation("probe", (uids[-1], 0), ((5.0, 6.0),)),
    ]


def marked_store(study: Study) -> AnnotationStore:
    store = AnnotationStore()
    for a in every_kind(study.uids):
        store.add(a)
    store.set_key_image((study.uids[1], 0), True)
    store.set_calibration(study.uids[0], (0.5, 0.5))
    return store


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error lines for a file (warnings allowed)."""
    if not Path(DCIODVFY).exists():
        pytest.skip("dicom3tools' dciodvfy is not installed")
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).decode("latin-1").splitlines() if line.startswith("Error")]


def same_points(a: Annotation, b: Annotation, tolerance: float = 0.5) -> bool:
    return a.kind == b.kind and a.frame == b.frame and len(a.points) == len(b.points) and all(
        abs(p[0] - q[0]) <= tolerance and abs(p[1] - q[1]) <= tolerance for p, q in zip(a.points, b.points, strict=True))
