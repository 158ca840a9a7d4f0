"""The client side of the fault matrix, run as a process inside the cluster lab's LAN namespace.

``python -m tests.failover.workload --profiles P --study UID --library DIR --status F`` runs at once, each in its
own thread and through the viewer's one retry-and-resume engine (:class:`viewer.pacs.resume.ResilientClient`):

- **wado**: a WADO-RS retrieval of the seeded study into the library at DIR (started once the stores flow);
- **find**: IMAGE-level C-FIND of the seeded study in a loop, until the other two are done;
- **store**: 100 new CT instances sent with C-STORE, paced like a modality producing them (one every 40 ms), and
  afterwards fetched back through the VIP to check that every acknowledged one is on the node now serving.

It rewrites the status file F (JSON: images held, stores acknowledged, queries answered) as it goes, so the test
can strike when every workload is under way, and prints one JSON line with the results when all are done.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pydicom

from tests.support import dataset_sha256
from viewer.dicom.demo import ct_series_datasets
from viewer.library import Library
from viewer.pacs.cluster import load_profiles
from viewer.pacs.health import EventLog
from viewer.pacs.resume import ResilientClient

STORE_COUNT = 100
STORE_PACE_S = 0.04
FIND_PAUSE_S = 0.2
STORES_BEFORE_RETRIEVAL = 5
WAIT_STORES_S = 30
FIND_LIMIT = 100_000


def part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class Status:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.values = {"wado_held": 0, "stored": 0, "queries": 0}

    def set(self, key: str, value: int) -> None:
        with self.lock:
            self.values[key] = value
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.values))
            tmp.replace(self.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--status", required=True)
    args = parser.parse_args(argv)
    profile = load_profiles(Path(args.profiles), system_dir=None).get("lab")
    wado_profile = replace(profile, preferred="wado", fallbacks=())
    events = EventLog()
    status = Status(Path(args.status))
    results: dict[str, object] = {}
    done = threading.Event()

    sent = {str(ds.SOPInstanceUID): part10(ds) for ds in ct_series_datasets(STORE_COUNT, rows=128, cols=128,
                                                                             seed=977)}
    storing = threading.Event()  # the retrieval starts once the stores are flowing, so both meet the fault

    def wado() -> None:
        storing.wait(WAIT_STORES_S)
        with Library.open(args.library) as library:
            client = ResilientClient(wado_profile, library, on_event=events.record)
            outcome = client.retrieve(args.study, progress=lambda n, _t: status.set("wado_held", n))
            uids = [r.sop_instance_uid for r in library.iter_instances()]
            results["wado"] = {"complete": outcome.complete, "held": len(uids), "distinct": len(set(uids)),
                               "digests": {r.sop_instance_uid: dataset_sha256(r.path.read_bytes())
                                           for r in library.iter_instances()},
                               "partial_files": len(library.partial_files()),
                               "fsck": library.fsck(), "describe": outcome.describe()}

    def store() -> None:
        client = ResilientClient(profile, on_event=events.record)

        def paced(done_count: int, _total: int | None) -> None:
            status.set("stored", done_count)
            if done_count >= STORES_BEFORE_RETRIEVAL:
                storing.set()
            time.sleep(STORE_PACE_S)

        outcome = client.store(list(sent.values()), progress=paced)
        study_uid = str(pydicom.dcmread(io.BytesIO(next(iter(sent.values()))), stop_before_pixels=True)
                        .StudyInstanceUID)
        fetched: dict[str, str] = {}
        ResilientClient(profile, on_event=events.record).retrieve(
            study_uid, sink=lambda data: fetched.__setitem__(str(pydicom.dcmread(
                io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID), dataset_sha256(data)))
        results["store"] = {"sent": len(sent), "acknowledged": sorted(outcome.stored),
                            "refused": list(outcome.refused), "error": outcome.error,
                            "present": sorted(fetched),
                            "identical": sorted(u for u in outcome.stored
                                                if fetched.get(u) == dataset_sha256(sent[u]))}

    def find() -> None:
        client = ResilientClient(profile, on_event=events.record)
        answers: list[int] = []
        while not done.is_set():
            rows = client.find("image", {"StudyInstanceUID": args.study}, limit=FIND_LIMIT)
            answers.append(len({r["SOPInstanceUID"] for r in rows}))
            status.set("queries", len(answers))
            done.wait(FIND_PAUSE_S)
        results["find"] = {"queries": len(answers), "whole": sum(1 for a in answers if a == args.expected)}

    def guarded(name: str, fn) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # reported, not hidden: the test fails on it
                results[name] = {"exception": f"{type(exc).__name__}: {exc}"}
        thread = threading.Thread(target=run, name=name)
        thread.start()
        return thread

    finder = guarded("find", find)
    workers = [guarded("store", store), guarded("wado", wado)]
    for thread in workers:
        thread.join()
    done.set()
    finder.join()
    results["events"] = events.sentences()
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
