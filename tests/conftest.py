"""Fixtures shared by every suite.  Suites keep their own peers (Orthanc, DCMTK, SCPs) in their own conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

from viewer.library import Library


@pytest.fixture
def library(tmp_path: Path) -> Library:
    lib = Library.open(tmp_path / "library")
    yield lib
    lib.close()


@pytest.fixture(scope="session")
def pydicom_test_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    files = [Path(p) for p in get_testdata_files()]
    assert len(files) > 100, "pydicom's bundled test files are missing"
    return files
