"""The failover drill: no acknowledged image is lost when the active PACS node dies (issue 4).

1. Through the VIP, send ``instances`` CT images with C-STORE (the viewer's own engine,
   ``ResilientClient.store``: it retries through the takeover and counts "already stored" as success), and
   hard-kill the active VM (its qemu process: a power cut) when a third of them are acknowledged.  Every
   acknowledged SOP Instance UID is recorded.
2. After the takeover, retrieve the study from the VIP (C-GET) into a fresh library: every acknowledged instance
   must be there and its data set byte-identical (SHA-256) to what was sent.
3. Restart the killed node, wait until DRBD has resynchronised it, fail back gracefully (Heartbeat standby on the
   survivor) and check again.
4. A second hard failover in the middle of ``mifas-pacs get --cluster lab`` (the command IT uses, run as a
   separate process in the lab's namespace): it must finish with every instance, byte-identical.

Returns the figures as a dict: acknowledged, lost, corrupted, takeover_s, resync_s, failback_s, client_get_ok,
and the details behind them.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pydicom

from mifaslab import config
from mifaslab.host import LabError
from mifaslab.image import Say
from mifaslab.lab import Lab

REPO = Path(__file__).resolve().parents[3]
GET_TIMEOUT_S = 600.0
STORE_STRIKE_FRACTION = 3  # kill after 1/3 acknowledged
GET_STRIKE_FRACTION = 4  # kill after 1/4 retrieved


def dataset_sha256(data: bytes) -> str:
    """SHA-256 of a Part 10 file's data set (after the File Meta group, which a PACS may rewrite)."""
    group_length = int.from_bytes(data[140:144], "little")
    return hashlib.sha256(data[144 + group_length:]).hexdigest()


def _profile():
    from viewer.pacs.cluster import ClusterAddress, ClusterProfile

    return ClusterProfile(name="lab", ae_title=config.PACS_AET, calling_ae="MIFASDRILL",
                          vip=ClusterAddress(config.VIP, config.DICOM_PORT),
                          members=tuple(ClusterAddress(spec.client_ip, config.DICOM_PORT, name=f"node {n[-1].upper()}")
                                        for n, spec in config.NODES.items()))


def make_study(count: int) -> tuple[str, dict[str, bytes]]:
    from viewer.dicom.demo import ct_series_datasets

    blobs: dict[str, bytes] = {}
    study_uid = ""
    for ds in ct_series_datasets(count, rows=256, cols=256, seed=404):
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        blobs[str(ds.SOPInstanceUID)] = out.getvalue()
        study_uid = str(ds.StudyInstanceUID)
    return study_uid, blobs


def verify(study_uid: str, digests: dict[str, str], acknowledged: list[str], work: Path, tag: str) -> dict[str, Any]:
    """Retrieve the study through the VIP into a fresh library; count acknowledged instances missing or changed."""
    from viewer.library import Library
    from viewer.pacs.resume import ResilientClient

    with Library.open(work / f"verify-{tag}") as library:
        outcome = ResilientClient(_profile(), library).retrieve(study_uid)
        held = {r.sop_instance_uid: dataset_sha256(r.path.read_bytes()) for r in library.iter_instances()}
    lost = [uid for uid in acknowledged if uid not in held]
    corrupted = [uid for uid in acknowledged if uid in held and held[uid] != digests[uid]]
    return {"held": len(held), "lost": lost, "corrupted": corrupted, "complete": outcome.complete}


def run_drill(lab: Lab, *, instances: int = 200, say: Say = print) -> dict[str, Any]:
    from mifaslab.netns.host import network_namespace
    from viewer.pacs.resume import ResilientClient

    lab._require_up()
    if lab.vip_holder() is None:
        raise LabError("no node holds the VIP; the drill needs a healthy lab (`mifas-lab status`).")
    for node, info in lab.state()["nodes"].items():
        from mifaslab.host import process_alive

        if not process_alive(info["pid"]):
            raise LabError(f"{node} is down; `mifas-lab recover {node}` before the drill.")
    os.environ["TCP_NODELAY"] = "1"
    study_uid, blobs = make_study(instances)
    digests = {uid: dataset_sha256(data) for uid, data in blobs.items()}
    result: dict[str, Any] = {"instances": instances, "study": study_uid}
    with tempfile.TemporaryDirectory(prefix="mifas-drill-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        # -- 1. C-STORE through a hard failover --------------------------------------------------------------
        first_active = lab.vip_holder()
        failover: dict[str, Any] = {}
        strike_at = max(1, instances // STORE_STRIKE_FRACTION)
        striker: list[threading.Thread] = []

        def strike() -> None:
            try:
                failover.update(lab.failover("hard"))
            except Exception as exc:  # reported in the result; the store goes on regardless
                failover["error"] = str(exc)

        def progress(done: int, _total: int | None) -> None:
            if done >= strike_at and not striker:
                striker.append(threading.Thread(target=strike, name="drill-strike"))
                striker[0].start()

        say(f"storing {instances} CT images through the VIP; {first_active} is killed after {strike_at}")
        with network_namespace(config.NAMESPACE):
            started = time.monotonic()
            outcome = ResilientClient(_profile()).store(list(blobs.values()), progress=progress)
            store_s = time.monotonic() - started
            if striker:
                striker[0].join(config.VIP_TIMEOUT_S + 30)
            acknowledged = list(outcome.stored)
            result.update({"acknowledged": len(acknowledged), "store_error": outcome.error,
                           "store_s": round(store_s, 1), "killed": failover.get("failed"),
                           "takeover_s": failover.get("takeover_s"), "takeover_error": failover.get("error")})
            say(f"{len(acknowledged)} of {instances} acknowledged; takeover {failover.get('takeover_s')} s; "
                "checking every acknowledged image through the VIP")
            # -- 2. after the takeover ---------------------------------------------------------------------------
            check = verify(study_uid, digests, acknowledged, work, "takeover")
        result.update({"lost": len(check["lost"]), "corrupted": len(check["corrupted"]),
                       "lost_uids": check["lost"][:20], "corrupted_uids": check["corrupted"][:20]})
        killed = failover.get("failed")
        if not killed:
            raise LabError(f"the drill's failover did not happen: {failover.get('error') or 'no strike'}")
        # -- 3. recover, resync, fail back, check again -------------------------------------------------------
        say(f"recovering {killed}; waiting for DRBD to resync")
        recovered = lab.recover(killed)
        result["resync_s"] = recovered["resync_s"]
        result["recover_boot_s"] = recovered["boot_s"]
        say("failing back gracefully (Heartbeat standby on the survivor)")
        back = lab.failover("graceful")
        result["failback_s"] = back["takeover_s"]
        result["failback_to"] = back["serving"]
        with network_namespace(config.NAMESPACE):
            again = verify(study_uid, digests, acknowledged, work, "failback")
        result["lost_after_failback"] = len(again["lost"])
        result["corrupted_after_failback"] = len(again["corrupted"])
        result["lost"] += len(again["lost"])
        result["corrupted"] += len(again["corrupted"])
        # -- 4. the viewer's own retrieval through a second hard failover --------------------------------------
        say("mifas-pacs get --cluster through a second hard failover")
        result.update(_client_get(lab, study_uid, digests, work))
    return result


def _client_get(lab: Lab, study_uid: str, digests: dict[str, str], work: Path) -> dict[str, Any]:
    profiles = work / "clusters.json"
    profiles.write_text(lab.profiles_json())
    library = work / "client-library"
    log = work / "client-get.log"
    python = sys.executable
    argv = ["ip", "netns", "exec", config.NAMESPACE, "env", "TCP_NODELAY=1", f"PYTHONPATH={REPO}", python, "-m",
            "viewer.pacs.cli", "get", "--cluster", "lab", "--profiles", str(profiles), "--study", study_uid,
            "--library", str(library)]
    expected = _count_on_pacs(work, study_uid)
    strike_at = max(1, expected // GET_STRIKE_FRACTION)
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    failover: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + GET_TIMEOUT_S
        while process.poll() is None and _count(library) < strike_at and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            failover = lab.failover("hard")
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    from viewer.library import Library

    with Library.open(library) as lib:
        held = {r.sop_instance_uid: dataset_sha256(r.path.read_bytes()) for r in lib.iter_instances()}
    identical = sum(1 for uid, digest in held.items() if digests.get(uid) == digest)
    ok = process.returncode == 0 and len(held) == expected and identical == expected and bool(failover)
    return {"client_get_ok": ok, "client_get_rc": process.returncode, "client_get_instances": len(held),
            "client_get_identical": identical, "client_get_expected": expected,
            "client_get_interrupted_at": strike_at if failover else None,
            "second_takeover_s": failover.get("takeover_s"),
            "client_get_log_tail": log.read_text(errors="replace").splitlines()[-8:]}


def _count(library: Path) -> int:
    """Instances committed in a library that another process is writing (read-only look at its index)."""
    try:
        with sqlite3.connect(f"file:{library / 'index.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    except sqlite3.Error:
        return 0


def _count_on_pacs(work: Path, study_uid: str) -> int:
    """How many instances of the study the PACS holds now (IMAGE-level C-FIND through the VIP)."""
    from mifaslab.netns.host import network_namespace
    from viewer.pacs.resume import ResilientClient

    with network_namespace(config.NAMESPACE):
        rows = ResilientClient(_profile()).find("image", {"StudyInstanceUID": study_uid, "SOPInstanceUID": ""})
    return len({r.get("SOPInstanceUID") for r in rows})
