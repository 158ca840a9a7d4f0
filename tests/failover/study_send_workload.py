"""The client side of tests/failover/test_study_send.py, run inside the cluster lab's LAN namespace.

``python -m tests.failover.study_send_workload --profiles P --work DIR --status F --go G`` puts a 300-slice CT
study into a library at DIR and sends it with :func:`viewer.share.send.send_instances` through the cluster.  When
a third is acknowledged it writes ``{"acknowledged": N}`` to F and holds the send until the file G exists (the
test kills the active node, then creates G).  Afterwards it retrieves the study from the node now serving (the
SHA-256 of each data set it receives, and how many times each instance came) and prints one JSON line.

Every C-STORE call is observed (not replaced): the UIDs each association is given to send and those the node
acknowledged, so the test can check that no acknowledged instance was ever offered again.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pydicom

from tests.failover.clients import workload_arguments
from tests.pacs.conftest import ct_series, part10
from tests.support import dataset_sha256
from viewer.library import Library
from viewer.pacs import dimse
from viewer.pacs.cluster import load_profiles
from viewer.pacs.health import EventLog
from viewer.pacs.resume import ResilientClient
from viewer.pacs.status import store_succeeded
from viewer.share.send import send_instances

INSTANCES = 300
HOLD_AT = 100
GO_WAIT_S = 90


class StoreObserver:
    """Wraps DimseClient.store to record, per call, the UIDs offered and the UIDs acknowledged (the real
    C-STOREs still happen)."""

    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.offered_after_ack: list[str] = []
        self.calls = 0
        original = dimse.DimseClient.store

        def store(client, instances, *, on_stored=None, cancel=None):
            self.calls += 1
            for data in instances:
                uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
                if uid in self.acknowledged:
                    self.offered_after_ack.append(uid)

            def observed(uid: str, code: int) -> None:
                if store_succeeded(code):
                    self.acknowledged.add(uid)
                if on_stored is not None:
                    on_stored(uid, code)
            return original(client, instances, on_stored=observed, cancel=cancel)

        dimse.DimseClient.store = store  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    args = workload_arguments(argv)
    profile = load_profiles(Path(args.profiles), system_dir=None).get("lab")
    events = EventLog()
    observer = StoreObserver()
    library = Library(Path(args.work) / "library")
    datasets = ct_series(INSTANCES, rows=256, columns=256, seed=77)
    digests = {}
    for ds in datasets:
        data = part10(ds)
        library.store_bytes(data)
        digests[str(ds.SOPInstanceUID)] = dataset_sha256(data)
    study_uid = str(datasets[0].StudyInstanceUID)
    status, go = Path(args.status), Path(args.go)
    held_once = False

    def hold(done: int, _total: int | None) -> None:
        nonlocal held_once
        if done >= HOLD_AT and not held_once:
            held_once = True
            status.write_text(json.dumps({"acknowledged": done}))
            deadline = time.monotonic() + GO_WAIT_S
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    result = send_instances(library, ResilientClient(profile, on_event=events.record), list(digests), progress=hold)
    received: Counter[str] = Counter()
    fetched: dict[str, str] = {}

    def sink(data: bytes) -> None:
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        received[uid] += 1
        fetched[uid] = dataset_sha256(data)

    ResilientClient(profile, on_event=events.record).retrieve(study_uid, sink=sink)
    rows = ResilientClient(profile).find("image", {"StudyInstanceUID": study_uid,
                                                   "SeriesInstanceUID": str(datasets[0].SeriesInstanceUID)})
    json.dump({"uids": list(digests), "sent": list(result.sent), "already_held": list(result.already_held),
               "refused": dict(result.refused), "error": result.error,
               "identical": sorted(u for u, d in fetched.items() if digests.get(u) == d),
               "received_twice": sorted(u for u, n in received.items() if n > 1),
               "found": [r.get("SOPInstanceUID", "") for r in rows],
               "store_calls": observer.calls, "acknowledged": len(observer.acknowledged),
               "offered_after_ack": observer.offered_after_ack, "events": events.sentences()}, sys.stdout)
    print()
    library.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
