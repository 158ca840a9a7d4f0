"""The fault matrix on the real Heartbeat cluster: WADO-RS retrieval, C-FIND in a loop and C-STORE, all at once,
through each fault (the C-GET column is tests/failover/test_cluster_retrieve.py, through ``mifas-pacs``).

The client workloads (tests/failover/workload.py) run in the lab's LAN namespace and talk only to the VIP and the
members.  The fault strikes when every workload is under way.  Afterwards: every retrieved instance is in the
library exactly once and byte-identical (SHA-256 of the data set) to its source, with no partial or orphaned file;
every query answered whole; every acknowledged C-STORE is on the node now serving, byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from mifaslab.netns import ClusterLab
from tests.failover.clients import client_process, json_results
from tests.support import dataset_sha256
from viewer.dicom.demo import ct_series_datasets

pytestmark = [pytest.mark.network, pytest.mark.slow]

INSTANCES = 300
STRIKE_WHEN = {"wado_held": 60, "stored": 5, "queries": 1}
WORKLOAD_LIMIT_S = 180
TAKEOVER_LIMIT_S = 60
REPO = Path(__file__).resolve().parents[2]


def write_profile(path: Path) -> None:
    def address(host: str, name: str | None = None) -> dict[str, object]:
        entry: dict[str, object] = {"host": host, "port": 4242, "rest_url": f"http://{host}:8042",
                                    "dicomweb_url": f"http://{host}:8042/dicom-web"}
        if name:
            entry["name"] = name
        return entry

    path.write_text(json.dumps({"profiles": [{
        "name": "lab", "ae_title": "MIFASPACS", "transports": ["dimse", "dicomweb"],
        "vip": address("192.0.2.10"), "members": [address("192.0.2.11", "nodea"), address("192.0.2.12", "nodeb")],
    }]}))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[str, dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("matrix-source")
    digests = {}
    for i, ds in enumerate(ct_series_datasets(INSTANCES, rows=256, cols=256, seed=41)):
        path = folder / f"{i:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        digests[str(ds.SOPInstanceUID)] = dataset_sha256(path.read_bytes())
    return str(ds.StudyInstanceUID), digests, folder


def read_status(path: Path) -> dict[str, int]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


@pytest.mark.parametrize("mode", ["kill", "freeze", "link", "standby"])
def test_wado_queries_and_stores_survive_the_fault(cluster: ClusterLab, study, tmp_path: Path, mode: str) -> None:
    study_uid, digests, source = study
    # the workload imports tests.support, which imports the lab package (packaging/lab)
    env = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'packaging' / 'lab'}")
    seeded = subprocess.run(cluster.client_cmd(["/usr/bin/storescu", "-aec", "MIFASPACS", "192.0.2.10", "4242",
                                                *map(str, sorted(source.iterdir()))]),
                            env=env, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    profiles, library, status = tmp_path / "clusters.json", tmp_path / "library", tmp_path / "status.json"
    write_profile(profiles)
    cmd = cluster.client_cmd([sys.executable, "-m", "tests.failover.workload", "--profiles", str(profiles),
                              "--study", study_uid, "--expected", str(INSTANCES), "--library", str(library),
                              "--status", str(status)])
    with client_process(cmd, env=env, cwd=REPO) as workload:
        deadline = time.monotonic() + 60
        while workload.poll() is None and time.monotonic() < deadline:
            now = read_status(status)
            if all(now.get(key, 0) >= value for key, value in STRIKE_WHEN.items()):
                break
            time.sleep(0.02)
        assert workload.poll() is None, "the workloads ended before the fault: the test would prove nothing"
        at_fault = read_status(status)
        assert at_fault["wado_held"] < INSTANCES and at_fault["stored"] < 100, at_fault
        if mode == "standby":  # see test_cluster_retrieve: pause the client so the graceful takeover strikes it
            workload.send_signal(signal.SIGSTOP)
            failed = cluster.fail(mode)
            cluster.wait_vip_answers(TAKEOVER_LIMIT_S, on=cluster.peer(failed))
            workload.send_signal(signal.SIGCONT)
        else:
            failed = cluster.fail(mode)
        results = json_results(workload, WORKLOAD_LIMIT_S)
    print(f"\n[{mode}] fault on {failed} at {at_fault}\n" + "\n".join(results["events"]))

    wado = results["wado"]
    assert "exception" not in wado, wado
    assert wado["complete"] and wado["held"] == wado["distinct"] == INSTANCES  # all there, no duplicates
    assert wado["digests"] == digests  # byte-identical data sets
    assert wado["partial_files"] == 0 and wado["fsck"] == {"orphans_removed": 0, "missing": 0}

    store = results["store"]
    assert "exception" not in store, store
    assert store["error"] == "" and not store["refused"]
    assert len(store["acknowledged"]) == store["sent"] == 100
    assert set(store["acknowledged"]) <= set(store["present"])  # every acknowledged store is on the survivor
    assert store["identical"] == store["acknowledged"]

    find = results["find"]
    assert "exception" not in find, find
    assert find["queries"] >= 3 and find["whole"] == find["queries"]  # never a partial answer

    events = " ".join(results["events"])
    assert "stopped answering" in events and "resumed" in events
