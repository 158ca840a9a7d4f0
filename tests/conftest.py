"""Fixtures shared by every suite.  Suites keep their own peers (Orthanc, DCMTK, SCPs) in their own conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

from viewer.library import Library

# The whole suite is watched for patient data and secrets in log lines and error texts (tests/leakcheck.py).
pytest_plugins = ["tests.leakcheck"]


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


@pytest.fixture(autouse=True)
def _no_system_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees an empty system-wide folder, never the machine's /etc/mifas-viewer (an installed package's
    defaults would change what the tests see).  A test that wants system defaults sets the variable itself."""
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(tmp_path_factory.getbasetemp() / "no-system-config"))
    # ... and the audit trail (viewer.audit) of the viewer and mifas-pacs they start goes to the test's own folder.
    monkeypatch.setenv("MIFAS_AUDIT_DIR", str(tmp_path_factory.getbasetemp() / "audit"))
