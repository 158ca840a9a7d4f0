"""`mifas-pacs get --cluster` (the viewer's retry-and-resume engine) across a real Heartbeat takeover.

A 300-instance CT study is seeded through the virtual IP; the client runs in the cluster's LAN namespace and talks
only to the VIP and the members; when some of the images have reached its library, the active node suffers the
fault.  Every instance must end in the library exactly once and identical to its source, with nothing orphaned,
and the client must have said in words that it resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from mifaslab.netns import ClusterLab
from tests.failover.clients import client_process
from viewer.dicom.demo import ct_series_datasets
from viewer.library import Library
from viewer.library.jobs import JobStore

pytestmark = [pytest.mark.network, pytest.mark.slow]

INSTANCES = 300
FAULT_AFTER = 60  # images in the library before the fault strikes
RETRIEVE_LIMIT_S = 150
TAKEOVER_LIMIT_S = 60
MIFAS_PACS = str(Path(sys.executable).with_name("mifas-pacs"))


def write_profile(path: Path, budget_s: float | None = None, tls: dict[str, str] | None = None) -> None:
    vip = {"host": "192.0.2.10", "port": 4242, "name": "virtual IP", "rest_url": "http://192.0.2.10:8042"}
    members = [{"host": f"192.0.2.{n}", "port": 4242, "name": name, "rest_url": f"http://192.0.2.{n}:8042"}
               for n, name in ((11, "nodea"), (12, "nodeb"))]
    profile = {"name": "lab", "vip": vip, "members": members, "ae_title": "MIFASPACS"}
    if budget_s is not None:
        profile["retry"] = {"budget_s": budget_s}
    if tls is not None:
        profile["tls"] = tls
    path.write_text(json.dumps({"profiles": [profile]}))


def dataset_digest(data: bytes | Path) -> str:
    """SHA-256 of the data set without its File Meta group (the PACS may rewrite the meta header)."""
    ds = pydicom.dcmread(data if isinstance(data, Path) else pydicom.filebase.DicomBytesIO(data))
    return hashlib.sha256(ds.PixelData + str(ds.SOPInstanceUID).encode() + str(ds.PatientName).encode()
                          + str(ds.InstanceNumber).encode()).hexdigest()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[str, dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("source")
    digests = {}
    for i, ds in enumerate(ct_series_datasets(INSTANCES, rows=256, cols=256, seed=31)):
        path = folder / f"{i:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        digests[str(ds.SOPInstanceUID)] = dataset_digest(path)
    return str(ds.StudyInstanceUID), digests, folder


def held(library_dir: Path) -> int:
    """Images indexed so far, read through a read-only SQLite connection beside the client's writer."""
    index = library_dir / "index.sqlite"
    if not index.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM instances").fetchone()[0]
    except sqlite3.OperationalError:  # the client is still creating the schema
        return 0


@pytest.mark.parametrize("mode", ["kill", "freeze", "link", "standby"])
def test_get_through_the_vip_survives_the_fault(cluster: ClusterLab, study, tmp_path: Path, mode: str) -> None:
    get_across_the_fault(cluster, study, tmp_path, mode)


def test_get_over_dicom_tls_survives_a_kill(tls_cluster: ClusterLab, study, tmp_path: Path) -> None:
    """The same with both Orthancs speaking only DICOM TLS and requiring our certificate: the retry and resume
    are the same over TLS (a new handshake with the survivor)."""
    tls = tls_cluster.tls
    assert tls is not None
    settings = {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)}
    get_across_the_fault(tls_cluster, study, tmp_path, "kill", tls=settings)


def get_across_the_fault(cluster: ClusterLab, study, tmp_path: Path, mode: str,  # type: ignore[no-untyped-def]
                         tls: dict[str, str] | None = None) -> None:
    study_uid, digests, source = study
    env = dict(os.environ, TCP_NODELAY="1")
    store_tls = cluster.tls.dcmtk_args() if cluster.tls else []
    seeded = subprocess.run(cluster.client_cmd(["/usr/bin/storescu", *store_tls, "-aec", "MIFASPACS", "192.0.2.10",
                                                "4242", *map(str, sorted(source.iterdir()))]),
                            env=env, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    profiles, library_dir = tmp_path / "clusters.json", tmp_path / "library"
    write_profile(profiles, tls=tls)

    cmd = cluster.client_cmd([MIFAS_PACS, "get", "--cluster", "lab", "--profiles", str(profiles),
                              "--study", study_uid, "--library", str(library_dir)])
    with client_process(cmd, env=env) as client:
        deadline = time.monotonic() + 60
        while held(library_dir) < FAULT_AFTER and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.poll() is None, "the retrieval ended before the fault: the test would prove nothing"
        at_fault = held(library_dir)
        if mode == "standby":
            # A graceful takeover lets Orthanc drain its associations for a few seconds, enough for this transfer
            # to finish unharmed.  To make the takeover strike mid-transfer, the client is paused (a busy
            # workstation) until the VIP has moved, then goes on against a connection that is gone.
            client.send_signal(signal.SIGSTOP)
            failed = cluster.fail(mode)
            cluster.wait_vip_answers(TAKEOVER_LIMIT_S, on=cluster.peer(failed))
            client.send_signal(signal.SIGCONT)
        else:
            failed = cluster.fail(mode)
        out, err = client.communicate(timeout=RETRIEVE_LIMIT_S)
    print(f"\n[{mode}] fault on {failed} with {at_fault} of {INSTANCES} images here\n{err}{out}")

    assert client.returncode == 0, err
    assert f"{INSTANCES} of {INSTANCES} images are here" in out
    assert "resumed" in err and "Traceback" not in err
    with Library.open(library_dir) as lib:
        records = list(lib.iter_instances())
        assert len(records) == INSTANCES == len({r.sop_instance_uid for r in records})  # no duplicates
        for record in records:
            assert dataset_digest(record.path) == digests[record.sop_instance_uid]
        assert lib.fsck() == {"orphans_removed": 0, "missing": 0}  # no partial or orphaned file
        assert lib.partial_files() == []


def test_both_nodes_down_is_a_clear_error_and_keeps_what_arrived(cluster: ClusterLab, study,
                                                                   tmp_path: Path) -> None:
    """Both links cut mid-retrieval, with a 10 s budget: a clear error after the budget, the images that had
    arrived kept whole and verified, nothing partial, and the job left to resume when the PACS is back."""
    study_uid, digests, source = study
    env = dict(os.environ, TCP_NODELAY="1")
    seeded = subprocess.run(cluster.client_cmd(["/usr/bin/storescu", "-aec", "MIFASPACS", "192.0.2.10", "4242",
                                                *map(str, sorted(source.iterdir()))]),
                            env=env, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    profiles, library_dir = tmp_path / "clusters.json", tmp_path / "library"
    write_profile(profiles, budget_s=10)
    cmd = cluster.client_cmd([MIFAS_PACS, "get", "--cluster", "lab", "--profiles", str(profiles),
                              "--study", study_uid, "--library", str(library_dir)])
    with client_process(cmd, env=env) as client:
        deadline = time.monotonic() + 60
        while held(library_dir) < FAULT_AFTER and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.poll() is None, "the retrieval ended before the fault: the test would prove nothing"
        client.send_signal(signal.SIGSTOP)  # both links go down at the same instant, as the client sees it
        for node in ("nodea", "nodeb"):
            cluster.fail("link", node=node)
        client.send_signal(signal.SIGCONT)
        started = time.monotonic()
        out, err = client.communicate(timeout=RETRIEVE_LIMIT_S)
        waited = time.monotonic() - started
    print(f"\n[both down] after {waited:.1f} s\n{err}{out}")
    assert client.returncode == 1, err
    assert "Gave up the C-GET" in err + out and "Traceback" not in err
    assert waited < 10 + 30  # the budget, plus the timeouts of the attempt under way when it ran out
    with Library.open(library_dir) as lib:
        records = list(lib.iter_instances())
        assert FAULT_AFTER <= len(records) < INSTANCES
        assert len({r.sop_instance_uid for r in records}) == len(records)
        for record in records:
            assert dataset_digest(record.path) == digests[record.sop_instance_uid]
        assert lib.fsck() == {"orphans_removed": 0, "missing": 0}
        assert lib.partial_files() == []
        jobs = JobStore(lib).jobs()
        assert [(j.study_uid, j.state) for j in jobs] == [(study_uid, "failed")]
