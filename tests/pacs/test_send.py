"""Sending studies of the library to a real Orthanc (viewer.share.send): 300 CT slices by C-STORE arrive once and
byte for byte, a second send finds them all held and sends nothing, an instance of a SOP class Orthanc refuses is
listed with its status (and the rest still goes), a cancelled send leaves what was acknowledged on the PACS and
resumes, STOW-RS into the DICOMweb plugin, and ``mifas-pacs send`` end to end through the console script."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, OrthancProcess
from tests.audit.support import parse
from tests.pacs.conftest import CALLING_AE, ct_series, part10
from tests.support import require
from viewer import audit
from viewer.audit import AuditConfig
from viewer.errors import OperationCancelled
from viewer.library import Library
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.node import Timeouts
from viewer.pacs.resume import ResilientClient
from viewer.share.send import SEND_BATCH_BYTES_MAX, plan_batches, send_instances

pytestmark = pytest.mark.network

# A SOP class Orthanc does not know: it refuses its presentation context, so that instance is refused (0x0122).
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.8.498.77"
MIFAS_PACS = Path(sys.executable).with_name("mifas-pacs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    require(DICOMWEB_PLUGIN.exists(), "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    with OrthancProcess(tmp_path_factory.mktemp("send-orthanc"), aet="SENDTEST", remote_access=False) as process:
        yield process


def profile_of(server: OrthancProcess, via: str = "get") -> ClusterProfile:
    node = server.node(calling_ae=CALLING_AE, timeouts=Timeouts(connect_s=2, acse_s=5, dimse_s=10, network_s=20))
    profile = ClusterProfile.of_node(node, via)
    return dataclasses.replace(profile, transports=("dicomweb",)) if via == "wado" else profile


def fill(library: Library, datasets) -> list[str]:
    for ds in datasets:
        library.store_bytes(part10(ds))
    return [str(ds.SOPInstanceUID) for ds in datasets]


def on_orthanc(server: OrthancProcess, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> Orthanc's instance ID, for every instance of the study Orthanc holds."""
    found = [r["ID"] for r in server.rest("POST", "/tools/lookup", data=study_uid) if r["Type"] == "Study"]
    if not found:
        return {}
    instances = server.rest("GET", f"/studies/{found[0]}/instances")
    ids = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in instances}
    assert len(ids) == len(instances)  # each instance once
    return ids


def data_set(part10_bytes: bytes) -> bytes:
    """A Part 10 file's data set: what follows the file meta group (each receiver writes its own meta)."""
    assert part10_bytes[128:132] == b"DICM" and part10_bytes[132:136] == b"\x02\x00\x00\x00"
    return part10_bytes[144 + int.from_bytes(part10_bytes[140:144], "little"):]


def assert_identical(server: OrthancProcess, library: Library, ids: dict[str, str]) -> None:
    for uid, orthanc_id in ids.items():
        assert data_set(server.instance_file(orthanc_id)) == data_set(library.path_of(uid).read_bytes()), uid


def test_300_ct_slices_arrive_once_byte_for_byte_and_a_second_send_sends_nothing(server, tmp_path: Path) -> None:
    datasets = ct_series(300, rows=512, columns=512, seed=30)
    study_uid = str(datasets[0].StudyInstanceUID)
    with Library(tmp_path / "library") as library:
        uids = fill(library, datasets)
        records = [library.instance(u) for u in uids]
        batches = plan_batches(records)  # what send_instances reads at once: bounded, in order
        assert len(batches) > 1 and [r.sop_instance_uid for b in batches for r in b] == uids
        assert all(sum(r.size_bytes for r in b) <= SEND_BATCH_BYTES_MAX for b in batches)

        seen: list[tuple[int, int | None]] = []
        result = send_instances(library, ResilientClient(profile_of(server)), uids,
                                progress=lambda done, total: seen.append((done, total)))
        assert result.complete, result.error
        assert sorted(result.sent) == sorted(uids) and result.already_held == ()
        assert seen[-1] == (300, 300) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        ids = on_orthanc(server, study_uid)
        assert sorted(ids) == sorted(uids)
        assert_identical(server, library, ids)

        again = send_instances(library, ResilientClient(profile_of(server)), uids)
        assert again.complete and again.sent == () and sorted(again.already_held) == sorted(uids)
        assert len(on_orthanc(server, study_uid)) == 300


def test_an_instance_refused_by_the_pacs_is_listed_with_its_status(server, tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.4242.1"
    kept = ct_series(4, seed=31, study_uid=study_uid, series_number=1)
    refused = ct_series(2, seed=32, study_uid=study_uid, series_number=2)
    for ds in refused:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UNKNOWN_SOP_CLASS
    with Library(tmp_path / "library") as library:
        uids = fill(library, kept + refused)
        audit.start("mifas-viewer", AuditConfig(), tmp_path / "audit")
        try:
            result = send_instances(library, ResilientClient(profile_of(server)), uids)
        finally:
            audit.stop()
        received = [parse(line) for path in (tmp_path / "audit").glob("audit-*.log")
                    for line in path.read_bytes().splitlines()]
        assert [m.event for m in received] == ["Application Start", "Begin Transferring DICOM Instances",
                                               "DICOM Instances Transferred", "Application Stop"]
        done = received[2].xml.find("EventIdentification")
        assert done.get("EventOutcomeIndicator") == "4" and done.get("EventActionCode") == "R"  # minor failure
        assert received[2].study_uids == [study_uid]
        refused_uids = {str(ds.SOPInstanceUID) for ds in refused}
        assert set(result.refused) == refused_uids
        assert set(result.refused.values()) == {"status 0x0122"}  # SOP Class Not Supported
        assert sorted(result.sent) == sorted(uids[:4]) and result.error == "" and not result.complete
        assert sorted(on_orthanc(server, study_uid)) == sorted(uids[:4])


def test_a_cancelled_send_keeps_what_was_acknowledged_and_a_new_send_resumes(server, tmp_path: Path) -> None:
    datasets = ct_series(60, seed=33)
    study_uid = str(datasets[0].StudyInstanceUID)
    cancel = threading.Event()
    acknowledged = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal acknowledged
        acknowledged = max(acknowledged, done)
        if done >= 10:
            cancel.set()

    with Library(tmp_path / "library") as library:
        uids = fill(library, datasets)
        with pytest.raises(OperationCancelled):
            send_instances(library, ResilientClient(profile_of(server)), uids, progress=progress, cancel=cancel)
        held = on_orthanc(server, study_uid)
        assert set(uids[:acknowledged]) <= set(held) and len(held) < len(uids)  # in order, and stopped midway

        result = send_instances(library, ResilientClient(profile_of(server)), uids)
        assert result.complete and set(result.already_held) == set(held)
        assert sorted(result.sent + result.already_held) == sorted(uids)
        assert sorted(on_orthanc(server, study_uid)) == sorted(uids)


def test_stow_rs_into_the_dicomweb_plugin(server, tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.4242.2"
    kept = ct_series(12, seed=34, study_uid=study_uid, series_number=1)
    with Library(tmp_path / "library") as library:
        uids = fill(library, kept)
        result = send_instances(library, ResilientClient(profile_of(server, "wado")), uids)
        assert result.complete and sorted(result.sent) == sorted(uids)
        ids = on_orthanc(server, study_uid)
        assert sorted(ids) == sorted(uids)
        assert_identical(server, library, ids)
        again = send_instances(library, ResilientClient(profile_of(server, "wado")), uids)  # asked by QIDO-RS
        assert again.complete and again.sent == () and sorted(again.already_held) == sorted(uids)


def test_mifas_pacs_send_end_to_end(server, tmp_path: Path) -> None:
    require(MIFAS_PACS.exists(), "the mifas-pacs console script is not installed in this environment")
    datasets = ct_series(8, seed=36)
    study_uid, series_uid = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    with Library(tmp_path / "library") as library:
        uids = fill(library, datasets)
    settings = tmp_path / "settings.json"
    settings.write_text("{}")
    env = dict(os.environ, TCP_NODELAY="1", HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"))

    def send(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(MIFAS_PACS), "send", "--node", f"{server.aet}@127.0.0.1:{server.dicom_port}",
                               "--calling-ae", CALLING_AE, "--config", str(settings), "--library",
                               str(tmp_path / "library"), "--study", study_uid, "--progress", *extra],
                              capture_output=True, text=True, env=env, timeout=120)

    first = send("--series", series_uid)
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert sorted(answer["sent"]) == sorted(uids) and answer["already_held"] == []
    assert answer["refused"] == {} and answer["error"] == ""
    assert "sent 8/8" in first.stderr
    second = send()
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["already_held"] == uids and json.loads(second.stdout)["sent"] == []
    assert sorted(on_orthanc(server, study_uid)) == sorted(uids)

    unknown = send("--series", "1.2.3.4")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines()[-1] == ("mifas-pacs: The local library does not hold that series "
                                                      "in that study.")
    bad = send("--series", "not-a-uid")
    assert bad.returncode == 2
