"""Sending a study to a PACS: ``mifas-pacs send`` against DCMTK's storescu, whole processes, the same files.

    python benchmarks/send.py [--instances 300] [--repeat 3] [--size 512]

One Orthanc (TCP_NODELAY=1) on loopback; one library holding a CT study of --instances --size x --size slices.
Each round deletes the study from Orthanc, then runs ``mifas-pacs send --node ... --study UID`` (the console
script: start-up, the held-instances query, batches read from the library, C-STORE), deletes it again and runs
``/usr/bin/storescu`` on the library's files of the study; the order alternates between rounds.  Every process has
TCP_NODELAY=1.  A last ``mifas-pacs send`` finds every instance held and sends nothing (the resume check alone).
Prints one JSON line:

- instances, size, repeat, mb (the study's bytes)
- ours_s, storescu_s: best whole-process seconds; ours_median_s, storescu_median_s
- ours_instances_per_s, storescu_instances_per_s (from the best)
- ratio_storescu_over_ours: per round, storescu's time over ours {median, min, max}; above 1 means we were faster
- all_held_s: the whole process of a send that finds everything already on the PACS
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))  # mifaslab: the lab package (test tools)

STORESCU = "/usr/bin/storescu"  # DCMTK's; the venv's pynetdicom installs a script of the same name
MIFAS_PACS = Path(sys.executable).with_name("mifas-pacs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    from mifaslab.orthanc import OrthancProcess
    from tests.pacs.conftest import ct_series, part10
    from viewer.library import Library

    env = dict(os.environ, TCP_NODELAY="1")
    with tempfile.TemporaryDirectory(prefix="mifas-send-bench-") as tmp:
        work = Path(tmp)
        datasets = ct_series(args.instances, rows=args.size, columns=args.size, seed=9)
        study_uid = str(datasets[0].StudyInstanceUID)
        with Library(work / "library") as library:
            for ds in datasets:
                library.store_bytes(part10(ds))
            files = [str(library.path_of(str(ds.SOPInstanceUID))) for ds in datasets]
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        settings = work / "settings.json"
        settings.write_text("{}")
        with OrthancProcess(work / "orthanc", aet="BENCH") as orthanc:
            def clear() -> None:
                for found in orthanc.rest("POST", "/tools/lookup", data=study_uid):
                    if found["Type"] == "Study":
                        orthanc.rest("DELETE", f"/studies/{found['ID']}")

            def held() -> int:
                found = [f["ID"] for f in orthanc.rest("POST", "/tools/lookup", data=study_uid)
                         if f["Type"] == "Study"]
                return len(orthanc.rest("GET", f"/studies/{found[0]}/instances")) if found else 0

            def ours() -> float:
                start = time.perf_counter()
                done = subprocess.run([str(MIFAS_PACS), "send", "--node", f"BENCH@127.0.0.1:{orthanc.dicom_port}",
                                       "--calling-ae", "BENCHSCU", "--config", str(settings), "--library",
                                       str(work / "library"), "--study", study_uid],
                                      env=env, capture_output=True, text=True, check=False)
                elapsed = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(f"mifas-pacs send failed: {done.stderr}")
                return elapsed

            def storescu() -> float:
                start = time.perf_counter()
                done = subprocess.run([STORESCU, "-aet", "BENCHSCU", "-aec", "BENCH", "127.0.0.1",
                                       str(orthanc.dicom_port), *files], env=env, capture_output=True, text=True,
                                      check=False)
                elapsed = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(f"storescu failed: {done.stderr}")
                return elapsed

            def timed(run) -> float:
                clear()
                seconds = run()
                if held() != args.instances:
                    raise SystemExit(f"Orthanc holds {held()} of {args.instances} after a send")
                return seconds

            our_times, their_times, ratios = [], [], []
            for round_ in range(args.repeat):
                if round_ % 2 == 0:
                    mine, theirs = timed(ours), timed(storescu)
                else:
                    theirs, mine = timed(storescu), timed(ours)
                our_times.append(mine)
                their_times.append(theirs)
                ratios.append(theirs / mine)
            timed(ours)
            all_held = ours()  # everything is on the PACS now: the held-instances query alone
    print(json.dumps({
        "instances": args.instances, "size": args.size, "repeat": args.repeat, "mb": round(mb, 1),
        "ours_s": round(min(our_times), 3), "storescu_s": round(min(their_times), 3),
        "ours_median_s": round(statistics.median(our_times), 3),
        "storescu_median_s": round(statistics.median(their_times), 3),
        "ours_instances_per_s": round(args.instances / min(our_times), 1),
        "storescu_instances_per_s": round(args.instances / min(their_times), 1),
        "ratio_storescu_over_ours": {"median": round(statistics.median(ratios), 3),
                                     "min": round(min(ratios), 3), "max": round(max(ratios), 3)},
        "all_held_s": round(all_held, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
