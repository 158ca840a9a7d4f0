"""Failover benchmark on the real Heartbeat cluster (mifaslab.netns): what a takeover costs our client.

    python benchmarks/failover.py [--mode kill|freeze|link|standby] [--instances 300] [--repeat 5]

Brings up the two-node lab (root, heartbeat, orthanc, dcmtk), seeds one CT study of --instances 256x256 slices
through the virtual IP, then, as a client on the lab's LAN (this process enters the LAN network namespace):

1. Throughput, no fault, --repeat rounds: DCMTK getscu (TCP_NODELAY=1) into a folder and our engine
   (ResilientClient.retrieve, the path the viewer uses) into a fresh Library, getscu first in even rounds and
   second in odd ones; medians compared.
2. One retrieval into a fresh Library with the fault struck after a fifth of the images.  From the moment of the
   fault, the lab polls the VIP with C-ECHO until it answers on the surviving node.

Prints one JSON line:
- instances_expected, instances_ok (in the library and byte-identical to the source data sets), corrupted,
  duplicates, partial_files
- takeover_s: from the fault until the VIP answers C-ECHO again (the cluster's own time)
- resume_delay_s: from the VIP answering again until our client had resumed (its Resumed event): the delay our
  retry loop adds beyond the takeover (target <= 2)
- throughput_ratio_vs_getscu: median getscu time / median engine time (target >= 1.0), with both medians and
  the per-round times and ratios; throughput_ratio_vs_getscu_then_sync: the same against getscu followed by sync(2), since
  getscu never waits for the disk and our library commits durably
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))  # mifaslab: the lab package (test tools)

GETSCU = "/usr/bin/getscu"
STORESCU = "/usr/bin/storescu"
PROBE_LIMIT_S = 120
RETRIEVE_LIMIT_S = 300


def dataset_sha256(data: bytes) -> str:
    group_length = int.from_bytes(data[140:144], "little")
    return hashlib.sha256(data[144 + group_length:]).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="kill", choices=["kill", "freeze", "link", "standby"])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ["TCP_NODELAY"] = "1"

    import pydicom

    from mifaslab.netns import PACS_AET, VIP, ClusterLab, missing_prerequisites
    from mifaslab.netns.host import network_namespace
    from viewer.dicom.demo import ct_series_datasets
    from viewer.library import Library
    from viewer.pacs.cluster import ClusterAddress, ClusterProfile
    from viewer.pacs.resume import ResilientClient
    from viewer.pacs.retry import Resumed

    missing = missing_prerequisites()
    if missing:
        raise SystemExit("failover.py: the cluster lab needs: " + "; ".join(missing))
    n = args.instances
    with tempfile.TemporaryDirectory(prefix="mifas-failover-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        source = work / "src"
        source.mkdir()
        digests = {}
        for i, ds in enumerate(ct_series_datasets(n, rows=256, cols=256, seed=53)):
            path = source / f"{i:05d}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            digests[str(ds.SOPInstanceUID)] = dataset_sha256(path.read_bytes())
        study_uid = str(ds.StudyInstanceUID)
        lab = ClusterLab(work / "lab", prefix="mifasbench").up()
        try:
            with network_namespace(lab.lan_ns):
                subprocess.run([STORESCU, "-aec", PACS_AET, VIP, "4242", *map(str, sorted(source.iterdir()))],
                               check=True, capture_output=True, timeout=300)
                profile = ClusterProfile(
                    name="lab", ae_title=PACS_AET, calling_ae="MIFASBENCH",
                    vip=ClusterAddress(VIP, 4242),
                    members=(ClusterAddress("192.0.2.11", 4242, name="nodea"),
                             ClusterAddress("192.0.2.12", 4242, name="nodeb")))
                result = measure(args, lab, profile, study_uid, digests, work, Library, ResilientClient, Resumed)
        finally:
            lab.down()
    print(json.dumps(result, sort_keys=True))


def measure(args, lab, profile, study_uid, digests, work, Library, ResilientClient, Resumed) -> dict[str, object]:
    n = len(digests)
    getscu_s, getscu_sync_s, engine_s = [], [], []

    def run_getscu(r: int) -> None:
        out = work / f"getscu-{r}"
        out.mkdir()
        os.sync()
        started = time.perf_counter()
        subprocess.run([GETSCU, "-aet", "GETSCU", "-aec", profile.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                        "-k", f"StudyInstanceUID={study_uid}", "-od", str(out), profile.vip.host,
                        str(profile.vip.port)], check=True, capture_output=True, timeout=RETRIEVE_LIMIT_S)
        getscu_s.append(time.perf_counter() - started)
        os.sync()  # getscu never waits for the disk; the library does (durable group commits)
        getscu_sync_s.append(time.perf_counter() - started)
        assert len(list(out.iterdir())) == n, "getscu did not receive the whole study"

    def run_engine(r: int) -> None:
        os.sync()
        with Library.open(work / f"library-{r}") as library:
            started = time.perf_counter()
            outcome = ResilientClient(profile, library).retrieve(study_uid)
            engine_s.append(time.perf_counter() - started)
            assert outcome.complete, outcome.describe()

    for r in range(args.repeat):  # alternate who goes first, so neither always meets the other's after-effects
        first, second = (run_getscu, run_engine) if r % 2 == 0 else (run_engine, run_getscu)
        first(r)
        second(r)

    # the fault run
    resumed: list[float] = []
    events: list[str] = []

    def on_event(event) -> None:
        events.append(type(event).__name__)
        if isinstance(event, Resumed):
            resumed.append(time.monotonic())

    library_dir = work / "library-fault"
    fault_at: list[float] = []
    failed: list[str] = []
    vip_back: list[float] = []
    strike_at = max(1, n // 5)

    def prober() -> None:
        """The cluster's own takeover: until the VIP answers C-ECHO on the surviving node (lab.wait_vip_answers
        polls echoscu from the LAN)."""
        try:
            waited = lab.wait_vip_answers(PROBE_LIMIT_S, on=lab.peer(failed[0]))
            vip_back.append(fault_at[0] + waited)
        except Exception as exc:  # reported in the JSON as a missing takeover_s
            print(f"failover.py: the VIP did not come back: {exc}", file=sys.stderr)

    probe_thread = threading.Thread(target=prober)

    def progress(done: int, _total: int | None) -> None:
        if done >= strike_at and not fault_at:
            fault_at.append(time.monotonic())
            failed.append(lab.fail(args.mode))
            probe_thread.start()

    with Library.open(library_dir) as library:
        outcome = ResilientClient(profile, library, on_event=on_event).retrieve(study_uid, progress=progress)
        probe_thread.join(PROBE_LIMIT_S)
        records = list(library.iter_instances())
        uids = [r.sop_instance_uid for r in records]
        ok = sum(1 for r in records if digests.get(r.sop_instance_uid) == dataset_sha256(r.path.read_bytes()))
        partial = len(library.partial_files())
    takeover = vip_back[0] - fault_at[0] if vip_back and fault_at else None
    resume_delay = max(0.0, resumed[0] - vip_back[0]) if resumed and vip_back else (0.0 if not resumed else None)
    g, e = statistics.median(getscu_s), statistics.median(engine_s)
    return {
        "mode": args.mode, "instances_expected": n, "instances_ok": ok, "corrupted": len(records) - ok,
        "duplicates": len(uids) - len(set(uids)), "partial_files": partial, "complete": outcome.complete,
        "interrupted": bool(resumed), "takeover_s": None if takeover is None else round(takeover, 2),
        "resume_delay_s": None if resume_delay is None else round(resume_delay, 2),
        "throughput_ratio_vs_getscu": round(g / e, 3), "getscu_s_median": round(g, 3),
        "throughput_ratio_vs_getscu_then_sync": round(statistics.median(getscu_sync_s) / e, 3),
        "throughput_ratio_per_round": [round(a / b, 3) for a, b in zip(getscu_s, engine_s, strict=True)],
        "engine_s_median": round(e, 3), "getscu_s": [round(t, 3) for t in getscu_s],
        "engine_s": [round(t, 3) for t in engine_s], "repeat": args.repeat,
    }


if __name__ == "__main__":
    main()
