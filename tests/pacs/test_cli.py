"""``mifas-pacs`` as a user runs it: the installed console script in a subprocess, against the real Orthanc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, Seed
from tests.pacs.test_conformance import assert_same_instance
from tests.support import require
from viewer.library import Library
from viewer.pacs import parse_node
from viewer.settings import Settings, save_settings

pytestmark = pytest.mark.network

MIFAS_PACS = Path(sys.executable).parent / "mifas-pacs"


def mifas_pacs(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    require(MIFAS_PACS.exists(), "mifas-pacs is not installed in the venv (pip install -e .)")
    extra = ["--config", str(config)] if config is not None else []
    command = [str(MIFAS_PACS), *args[:1], *extra, *args[1:]] if args and not args[0].startswith("-") else \
        [str(MIFAS_PACS), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An empty settings file, so that the user's own settings never leak into a test."""
    path = tmp_path / "settings.json"
    save_settings(Settings(calling_ae=CALLING_AE), path)
    return path


@pytest.fixture
def address(orthanc: OrthancProcess) -> str:
    return f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"


def assert_one_line_failure(run: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert run.returncode == status, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("mifas-pacs: "), run.stderr
    assert text in run.stderr
    assert run.stdout == ""


def test_version() -> None:
    run = mifas_pacs("--version")
    assert run.returncode == 0 and run.stdout.startswith("mifas-pacs ")


def test_echo(address: str, config: Path) -> None:
    run = mifas_pacs("echo", "--node", address, config=config)
    assert run.returncode == 0, run.stderr
    assert "answered in" in run.stdout and run.stderr == ""


def test_find_prints_json_lines(address: str, config: Path, seed_data: Seed) -> None:
    run = mifas_pacs("find", "--node", address, "--level", "series", "-k", f"StudyInstanceUID={seed_data.two_series_study}",
                     config=config)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert {r["SeriesInstanceUID"] for r in rows} == set(seed_data.two_series)


def test_find_cut_at_its_limit_says_so_and_exits_3(address: str, config: Path, seed_data: Seed) -> None:
    """More matches than --limit: the first ones printed, a warning, and exit status 3 (not 0: a script must not
    take part of the list for all of it)."""
    keys = ("--level", "image", "-k", f"StudyInstanceUID={seed_data.two_series_study}")
    cut = mifas_pacs("find", "--node", address, *keys, "--limit", "4", config=config)
    assert cut.returncode == 3, cut.stderr
    assert len(cut.stdout.splitlines()) == 4 and "more than 4 matches" in cut.stderr
    whole = mifas_pacs("find", "--node", address, *keys, "--limit", "10", config=config)
    assert whole.returncode == 0 and len(whole.stdout.splitlines()) == 10, whole.stderr


def test_get_into_a_folder(address: str, config: Path, seed_data: Seed, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = mifas_pacs("get", "--node", address, "--study", seed_data.two_series_study, "--out", str(out), config=config)
    assert run.returncode == 0, run.stderr
    assert "10 of 10 images are here (10 received)" in run.stdout and run.stderr == ""
    files = sorted(out.iterdir())
    assert [p.name for p in files] == sorted(f"{u}.dcm" for u in seed_data.instances_of(seed_data.two_series_study))
    for path in files:
        assert_same_instance(path.read_bytes(), seed_data.files[path.stem])


@pytest.mark.parametrize("via", ["get", "move", "wado"])
def test_get_into_the_library(via: str, orthanc: OrthancProcess, config: Path, seed_data: Seed, tmp_path: Path,
                              move_port: int) -> None:
    # The saved node: the CLI takes its DICOMweb URL (wado) and our storage port (move) from the settings.
    node = parse_node(f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", name="lab", calling_ae=CALLING_AE,
                      dicomweb_url=orthanc.dicomweb_url)
    save_settings(Settings(nodes=[node], calling_ae=CALLING_AE, storage_port=move_port), config)
    library = tmp_path / "lib"
    run = mifas_pacs("get", "--node", "lab", "--via", via, "--study", seed_data.ct_study, "--series", seed_data.ct_series,
                     "--library", str(library), config=config)
    assert run.returncode == 0, run.stderr
    with Library.open(library) as lib:
        assert lib.instance_uids(seed_data.ct_series) == seed_data.instances_of(seed_data.ct_study)
        record = lib.instances(seed_data.ct_series)[0]
        assert pydicom.dcmread(record.path).InstanceNumber == 1


def test_progress_goes_to_stderr(address: str, config: Path, seed_data: Seed, tmp_path: Path) -> None:
    run = mifas_pacs("get", "--node", address, "--study", seed_data.two_series_study, "--out", str(tmp_path / "o"),
                     "--progress", config=config)
    assert run.returncode == 0
    assert "received 10/10" in run.stderr and "received 10" not in run.stdout


def test_unreachable_node_fails_with_one_line(config: Path) -> None:
    run = mifas_pacs("echo", "--node", f"ANY@127.0.0.1:{free_port()}", "--timeout", "2", config=config)
    assert_one_line_failure(run, 1, "refused the connection (nothing is listening there)")


def test_wrong_called_ae_fails_with_one_line(orthanc: OrthancProcess, config: Path) -> None:
    run = mifas_pacs("echo", "--node", f"WRONG@127.0.0.1:{orthanc.dicom_port}", config=config)
    assert_one_line_failure(run, 1, "rejected our association: it is not called 'WRONG'")


def test_wrong_study_fails_with_one_line(address: str, config: Path, tmp_path: Path) -> None:
    run = mifas_pacs("get", "--node", address, "--study", "1.2.3.999", "--out", str(tmp_path / "o"), config=config)
    assert_one_line_failure(run, 1, "lists no study 1.2.3.999")


@pytest.mark.parametrize("args, text", [
    ((), "the following arguments are required"),
    (("echo",), "--node"),
    (("echo", "--node", "nonsense"), "neither AET@HOST:PORT nor the name of a saved node"),
    (("echo", "--node", "A@h:99999"), "outside 1-65535"),
    (("find", "--node", "A@h:1", "-k", "novalue"), "is not KEYWORD=VALUE"),
    (("find", "--node", "A@h:1", "-k", "PatientNam=X"), "'PatientNam' is not a DICOM keyword"),
    (("echo", "--node", "A@h:1", "--dicomweb", "ftp://x"), "is not an http:// or https:// URL"),
    (("get", "--node", "A@h:1", "--study", "1.2", "--out", "x", "--library", "y"), "not allowed with"),
    (("get", "--node", "A@h:1", "--study", "../../etc", "--out", "x"), "is not a valid UID"),
    (("echo", "--node", "A@h:1", "--timeout", "-1"), "--timeout"),
])
def test_usage_errors(args: tuple[str, ...], text: str, config: Path) -> None:
    run = mifas_pacs(*args, config=config) if args else mifas_pacs()
    assert_one_line_failure(run, 2, text)


# -- --cluster: the retry-and-resume engine from the command line ----------------------------------------------


@pytest.fixture
def profiles(orthanc: OrthancProcess, tmp_path: Path) -> Path:
    """A profile whose "virtual IP" is the session's Orthanc and whose second member is a closed port."""
    dead = free_port()
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"profiles": [{
        "name": "lab", "ae_title": orthanc.aet, "calling_ae": CALLING_AE,
        "vip": {"host": "127.0.0.1", "port": orthanc.dicom_port, "rest_url": orthanc.url},
        "members": [{"name": "node A", "host": "127.0.0.1", "port": orthanc.dicom_port, "rest_url": orthanc.url},
                    {"name": "node B", "host": "127.0.0.1", "port": dead}],
    }]}))
    return path


def test_cluster_echo_get_and_health(profiles: Path, seed_data: Seed, tmp_path: Path) -> None:
    run = mifas_pacs("echo", "--cluster", "lab", "--profiles", str(profiles))
    assert run.returncode == 0, run.stderr
    assert "cluster lab: virtual IP answered in" in run.stdout

    library = tmp_path / "lib"
    run = mifas_pacs("get", "--cluster", "lab", "--profiles", str(profiles), "--study", seed_data.ct_study,
                     "--library", str(library))
    assert run.returncode == 0, run.stderr
    expected = seed_data.instances_of(seed_data.ct_study)
    assert f"{len(expected)} of {len(expected)} images are here" in run.stdout
    with Library.open(library) as lib:
        assert lib.instance_uids(seed_data.ct_series) == expected

    run = mifas_pacs("health", "--cluster", "lab", "--profiles", str(profiles), "--json")
    assert run.returncode == 0, run.stderr
    states = {s["name"]: s for s in json.loads(run.stdout)}
    assert states["virtual IP"]["up"] and states["virtual IP"]["serving"] == "node A"
    assert states["node A"]["up"] and states["node B"]["up"] is False
    assert states["node B"]["state"] == "standby"  # its host answers (connection refused): no PACS running there


@pytest.mark.parametrize("args, text", [
    (("echo", "--cluster", "lab", "--node", "A@h:1"), "not allowed with"),
    (("echo", "--cluster", "nosuch"), "no cluster profile named 'nosuch'"),
    (("get", "--cluster", "lab", "--via", "wado", "--study", "1.2", "--out", "x"), "set by the cluster profile"),
    (("health", "--cluster", "lab", "--watch", "-1"), "--watch must be between"),
])
def test_cluster_usage_errors(args: tuple[str, ...], text: str, profiles: Path) -> None:
    run = mifas_pacs(*args, "--profiles", str(profiles))
    assert run.returncode in (1, 2), run.stderr
    assert run.stderr.startswith("mifas-pacs: ") and text in run.stderr, run.stderr


def test_damaged_system_files_are_warned_about_and_the_command_goes_on(address: str, config: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc"
    system.mkdir()
    (system / "settings.json").write_text("{ not json")
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(system))
    run = mifas_pacs("echo", "--node", address, config=config)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("mifas-pacs: warning: ")]
    assert len(warnings) == 1 and str(system / "settings.json") in warnings[0], run.stderr
    assert "answered in" in run.stdout


def test_verbose_logs_carry_no_patient_data(address: str, config: Path, seed_data: Seed, tmp_path: Path) -> None:
    """-v logs what happens (ours at INFO, pynetdicom's warnings) to stderr: UIDs, never a name, ID or birth date,
    though the search asks by name and the answers carry them (stdout: the user's data, as asked)."""
    from tests.leakcheck import PATIENT_VALUES

    found = mifas_pacs("find", "-v", "--node", address, "--level", "study", "-k", "PatientName=Other^Person",
                       "-k", "PatientBirthDate=", config=config)
    assert found.returncode == 0 and "Other^Person" in found.stdout, found.stderr
    got = mifas_pacs("get", "-v", "--node", address, "--study", seed_data.two_series_study,
                     "--out", str(tmp_path / "out"), config=config)
    assert got.returncode == 0, got.stderr
    logged = found.stderr + got.stderr
    assert " viewer." in logged, "-v logged nothing: the test would prove nothing"
    assert [v for v in PATIENT_VALUES if v in logged] == []
