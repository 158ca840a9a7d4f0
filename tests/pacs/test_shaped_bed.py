"""The co-allocation test bed (mifaslab.netns.shaped): two real Orthanc replicas of one study, each in its own
network namespace behind a tbf-shaped link (60 and 100 Mbit/s), reached from a client namespace; and the kill of
one replica, before and in the middle of a transfer.

Throughputs are printed (run with -s to see them), never asserted: the build machines have two cores shared with
other jobs.  What is asserted: both replicas answer and hold the study, each C-GET brings every instance back
byte-identical, a killed replica is unreachable while the other still answers, a transfer in flight breaks
(an aborted association when the server's connections end, a silence timeout when the link is cut first), and
nothing of the bed is left afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mifaslab.netns.host import netns_list, netns_pids, process_alive
from mifaslab.netns.shaped import ShapedReplicas
from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY
from tests.pacs.conftest import CALLING_AE, ct_series, part10
from tests.support import dataset_sha256, network_namespace, require
from viewer.errors import AssociationAbortedError, NodeUnreachableError, PacsTimeoutError
from viewer.pacs.dimse import DimseClient
from viewer.pacs.fastget import FastGetClient
from viewer.pacs.node import Timeouts

pytestmark = [pytest.mark.network, pytest.mark.slow]

PREFIX = "mifascatest"
RATES_MBIT = (60, 100)
INSTANCES = 80  # 80 x 256 x 256 x 16 bit: about 10.5 MB
KILL_AFTER = 20  # instances received before a replica is killed mid-transfer
SHORT = Timeouts(connect_s=1.0, acse_s=2.0, dimse_s=2.0, network_s=5.0)  # a dead replica is noticed fast
PATIENT = Timeouts(connect_s=2.0, acse_s=5.0, dimse_s=15.0, network_s=30.0)  # only a real break ends a get early


@pytest.fixture(scope="module")
def study() -> tuple[str, dict[str, bytes]]:
    datasets = ct_series(INSTANCES, rows=256, columns=256, seed=41, patient_id="MIFAS-CA")
    return str(datasets[0].StudyInstanceUID), {str(ds.SOPInstanceUID): part10(ds) for ds in datasets}


def require_bed() -> None:
    require(os.geteuid() == 0, "the shaped replicas need root (network namespaces, tc)")
    require(ORTHANC_BINARY.exists() and DICOMWEB_PLUGIN.exists(), "apt-get install -y orthanc orthanc-dicomweb")
    require(all(shutil.which(tool) for tool in ("ip", "tc", "ss")), "apt-get install -y iproute2")


def seed(bed: ShapedReplicas, source: dict[str, bytes]) -> None:
    print(f"\nbed up in {bed.up_s:.2f} s")
    started = time.monotonic()
    bed.upload(list(source.values()))
    print(f"{len(source)} instances uploaded to {len(bed.replicas)} replicas in {time.monotonic() - started:.2f} s")


@pytest.fixture
def bed(tmp_path: Path, study: tuple[str, dict[str, bytes]]) -> Iterator[ShapedReplicas]:
    require_bed()
    with ShapedReplicas(tmp_path / "bed", rates_mbit=RATES_MBIT, prefix=PREFIX) as shaped:
        seed(shaped, study[1])
        yield shaped
    assert_nothing_left(shaped)


def assert_nothing_left(bed: ShapedReplicas) -> None:
    assert [ns for ns in netns_list() if ns.startswith(f"{PREFIX}-")] == []
    assert bed.orthanc_pids() == []
    assert not any(replica.orthanc.running for replica in bed.replicas)


def uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def assert_identical(received: list[bytes], source: dict[str, bytes]) -> None:
    for data in received:
        assert dataset_sha256(data) == dataset_sha256(source[uid_of(data)])


def test_replicas_answer_at_their_rates_and_a_killed_one_is_gone(tmp_path: Path, study) -> None:
    require_bed()
    study_uid, source = study
    total_bytes = sum(map(len, source.values()))
    # What a killed run would leave: namespaces of the prefix, one with a process inside.
    for namespace in (f"{PREFIX}-lan", f"{PREFIX}-c"):
        subprocess.run(["ip", "netns", "add", namespace], check=True)
    leftover = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-c", "sleep", "300"])
    try:
        deadline = time.monotonic() + 10
        while leftover.pid not in netns_pids(f"{PREFIX}-c") and time.monotonic() < deadline:
            time.sleep(0.02)  # until `ip netns exec` has entered the namespace
        with ShapedReplicas(tmp_path / "bed", rates_mbit=RATES_MBIT, prefix=PREFIX) as bed:
            assert leftover.wait(timeout=10) == -signal.SIGKILL
            assert f"{PREFIX}-c" not in netns_list()
            pids = bed.orthanc_pids()
            assert len(pids) == len(RATES_MBIT)
            seed(bed, source)
            with network_namespace(bed.lan):
                check_replicas(bed, study_uid, source, total_bytes)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
        for namespace in (f"{PREFIX}-lan", f"{PREFIX}-c"):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
    assert_nothing_left(bed)
    assert not any(process_alive(pid) for pid in pids)


def check_replicas(bed: ShapedReplicas, study_uid: str, source: dict[str, bytes], total_bytes: int) -> None:
    for replica in bed.replicas:
        with DimseClient(replica.node(calling_ae=CALLING_AE)) as client:
            client.echo()
            matches = client.find("study", {"StudyInstanceUID": study_uid})
        assert [m["StudyInstanceUID"] for m in matches] == [study_uid]

    for replica in bed.replicas:
        received: list[bytes] = []
        started = time.perf_counter()
        result = FastGetClient(replica.node(calling_ae=CALLING_AE)).get(study_uid, sink=received.append)
        elapsed = time.perf_counter() - started
        assert sorted(map(uid_of, received)) == sorted(source) and result.completed == INSTANCES
        assert_identical(received, source)
        shaped_mb_s = replica.rate_mbit / 8
        print(f"{replica.name} ({replica.rate_mbit:g} Mbit/s = {shaped_mb_s:.1f} MB/s on the wire): "
              f"{total_bytes / 1e6:.1f} MB in {elapsed:.2f} s = {total_bytes / 1e6 / elapsed:.2f} MB/s "
              f"({total_bytes / elapsed / (shaped_mb_s * 1e6):.0%} of the shaped rate)")

    started = time.perf_counter()
    bed.kill(0)
    print(f"kill(0) took {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    with pytest.raises((NodeUnreachableError, AssociationAbortedError, PacsTimeoutError)) as caught:
        DimseClient(bed.replicas[0].node(calling_ae=CALLING_AE, timeouts=SHORT)).echo()
    print(f"echo to the killed {bed.replicas[0].name} failed after {time.perf_counter() - started:.2f} s: "
          f"{type(caught.value).__name__}: {caught.value}")
    DimseClient(bed.replicas[1].node(calling_ae=CALLING_AE, timeouts=SHORT)).echo()
    assert not bed.replicas[0].orthanc.running and bed.replicas[1].orthanc.running


@pytest.mark.parametrize("silent", [False, True], ids=["crash", "power-cut"])
def test_a_kill_mid_transfer_breaks_it(bed: ShapedReplicas, study, silent: bool) -> None:
    """Replica a is killed after KILL_AFTER instances: a crash ends the association at once (the client reads
    the end of the connection), a power cut is noticed by the silence timeout.  What arrived is whole."""
    study_uid, source = study
    received: list[bytes] = []
    reached = threading.Event()
    killed_at: list[float] = []

    def progress(done: int, total: int | None) -> None:
        if done >= KILL_AFTER:
            reached.set()

    def killer() -> None:
        if reached.wait(30):
            killed_at.append(time.monotonic())
            bed.kill(0, silent=silent)
            killed_at.append(time.monotonic())

    timeouts = SHORT if silent else PATIENT
    thread = threading.Thread(target=killer, name="killer")
    thread.start()
    try:
        with network_namespace(bed.lan):
            with pytest.raises(PacsTimeoutError if silent else AssociationAbortedError) as caught:
                FastGetClient(bed.replicas[0].node(calling_ae=CALLING_AE, timeouts=timeouts)).get(
                    study_uid, sink=received.append, progress=progress)
            broke_at = time.monotonic()
            DimseClient(bed.replicas[1].node(calling_ae=CALLING_AE, timeouts=SHORT)).echo()
    finally:
        reached.set()
        thread.join()
    assert killed_at, "the transfer ended before the kill: the test proved nothing"
    print(f"\n{'power cut' if silent else 'crash'} after {KILL_AFTER}+ instances: {len(received)} of {INSTANCES} "
          f"arrived; the get failed {broke_at - killed_at[0]:.2f} s after the kill began (kill took "
          f"{killed_at[1] - killed_at[0]:.2f} s): {caught.value}")
    assert KILL_AFTER <= len(received) < INSTANCES
    assert_identical(received, source)
