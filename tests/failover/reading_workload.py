"""The client side of tests/failover/test_reading_send.py, run inside the cluster lab's LAN namespace.

``python -m tests.failover.reading_workload --profiles P --work DIR --status F --go G`` makes a small CT study in a
library at DIR with a saved reading (GSPS, SR, KOS: viewer.reading.persist), and sends the reading with
:func:`viewer.reading.send.send_reading` through the cluster.  When the first object is acknowledged it writes
``{"acknowledged": 1}`` to F and holds the send until the file G exists (the test kills the active node, then
creates G), so the node dies in the middle of the send.  Afterwards it asks the node now serving which of the
objects it holds, with an IMAGE-level C-FIND per reading series, and prints one JSON line of results.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.failover.clients import workload_arguments
from tests.reading.saved_support import make_study, marked_store
from viewer.pacs.cluster import load_profiles
from viewer.pacs.health import EventLog
from viewer.pacs.resume import ResilientClient
from viewer.reading import persist
from viewer.reading.send import send_reading

GO_WAIT_S = 90


def main(argv: list[str] | None = None) -> int:
    args = workload_arguments(argv)
    profile = load_profiles(Path(args.profiles), system_dir=None).get("lab")
    events = EventLog()
    study = make_study(Path(args.work) / "library", seed=5)
    saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
    status, go = Path(args.status), Path(args.go)

    def hold_after_first(done: int, _total: int | None) -> None:
        if done == 1:
            status.write_text(json.dumps({"acknowledged": 1}))
            deadline = time.monotonic() + GO_WAIT_S
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    result = send_reading(study.library, ResilientClient(profile, on_event=events.record), study.study_uid,
                          progress=hold_after_first)
    client = ResilientClient(profile, on_event=events.record)
    held: list[str] = []
    for series_uid in sorted({study.library.instance(u).series_uid for u in saved.all()}):
        rows = client.find("image", {"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": series_uid})
        held += [r["SOPInstanceUID"] for r in rows]
    json.dump({"saved": list(saved.all()), "sent": list(result.sent), "refused": dict(result.refused),
               "error": result.error, "held": held, "unsent": persist.unsent(study.library, study.study_uid),
               "events": events.sentences()}, sys.stdout)
    print()
    study.library.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
