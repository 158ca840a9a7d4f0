"""Prior studies (issue 13): how long after a study opens the Priors dock lists its priors, against Orthanc.

    python benchmarks/priors.py [--others 300] [--priors 5] [--rounds 11]

One Orthanc (TCP_NODELAY=1) holds one patient's studies (the open one and --priors older ones), a homonym's study
and --others studies of other patients (one small image each).  The open study is in a fresh library; the
window's settings name the Orthanc as their one node.  Each round, in an order that alternates from round to
round:

- priors: ``window.open_study(current)``; the time from ``study_opened`` to the dock's complete list
  (``search_finished``: the library and the PACS have answered, the list is on screen); the layout itself is
  timed apart (``open_study_ms``: the hanging protocol, before ``study_opened``);
- reference: one plain STUDY-level C-FIND by Patient ID through the same kind of client (ResilientClient.find),
  in this process: the least any PACS-backed list could cost.

One warm-up round is not counted.  Prints one JSON line: median and best milliseconds of each, the ratio of the
medians (list / reference) and whether every round listed exactly the --priors studies (the homonym never).
The issue's figure is a list within 2 s of the open.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))  # mifaslab: the lab package (test tools)

PATIENT_ID, ISSUER, NAME, BIRTH = "BENCH-1", "HOSP-A", "Bench^Prior", "19500101"


def datasets(count_others: int, count_priors: int):
    """(open study's datasets, prior study UIDs, every dataset for the PACS)."""
    from tests.pacs.conftest import ct_series

    def one(patient_id: str, name: str, date: str, seed: int):
        ds = ct_series(1, rows=16, columns=16, seed=seed, patient_id=patient_id, patient_name=name,
                       study_date=date)[0]
        ds.IssuerOfPatientID, ds.PatientBirthDate = ISSUER, BIRTH
        return ds

    current = one(PATIENT_ID, NAME, "20240601", 1)
    priors = [one(PATIENT_ID, NAME, f"{2023 - i}0101", 10 + i) for i in range(count_priors)]
    homonym = one("BENCH-2", NAME, "20220101", 5)
    others = [one(f"OTHER-{i:05d}", f"Other^Person{i}", f"20{10 + i % 14:02d}0101", 100 + i)
              for i in range(count_others)]
    return current, [str(p.StudyInstanceUID) for p in priors], [current, *priors, homonym, *others]


def wait(app, done, timeout_s: float = 60.0) -> None:
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("priors.py: the list did not fill in time")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)


def measure(args) -> dict:
    from PySide6.QtWidgets import QApplication

    from mifaslab.orthanc import OrthancProcess
    from tests.pacs.conftest import part10
    from viewer.library import Library
    from viewer.pacs.cluster import ClusterProfile
    from viewer.pacs.resume import ResilientClient
    from viewer.settings import Settings
    from viewer.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    current, prior_uids, everything = datasets(args.others, args.priors)
    with tempfile.TemporaryDirectory() as tmp, OrthancProcess(Path(tmp) / "orthanc") as server:
        for ds in everything:
            server.upload_bytes(part10(ds))
        library = Library.open(Path(tmp) / "library")
        library.store_bytes(part10(current))
        node = server.node(calling_ae="MIFASBENCH")
        window = MainWindow(library, Settings(nodes=[node], default_via="get"),
                            settings_path=Path(tmp) / "settings.json", system_profiles_dir=None, resume_jobs=False)
        window.show()
        panel = window.priors
        marks: dict[str, float] = {}
        finished: list = []
        window.study_opened.disconnect(panel.on_study_opened)  # ours first: the clock starts at the signal
        window.study_opened.connect(lambda _uid: marks.__setitem__("opened", time.perf_counter()))
        window.study_opened.connect(panel.on_study_opened)
        panel.search_finished.connect(lambda result: (marks.__setitem__("listed", time.perf_counter()),
                                                      finished.append(result)))
        client = ResilientClient(ClusterProfile.of_node(node, "get"))
        study_uid = str(current.StudyInstanceUID)

        def priors_round() -> tuple[float, float, bool]:
            finished.clear()
            started = time.perf_counter()
            window.open_study(study_uid)
            wait(app, lambda: bool(finished))
            result = finished[0]
            exact = sorted(p.study_uid for p in result.priors) == sorted(prior_uids) and not result.to_confirm
            return (marks["listed"] - marks["opened"]) * 1000, (marks["opened"] - started) * 1000, exact

        def reference_round() -> float:
            started = time.perf_counter()
            client.find("study", {"PatientID": PATIENT_ID})
            return (time.perf_counter() - started) * 1000

        listed, layout, reference, exact_all = [], [], [], True
        for round_index in range(args.rounds + 1):
            order = ("priors", "reference") if round_index % 2 == 0 else ("reference", "priors")
            for what in order:
                if what == "priors":
                    list_ms, open_ms, exact = priors_round()
                    if round_index:
                        listed.append(list_ms)
                        layout.append(open_ms)
                        exact_all = exact_all and exact
                else:
                    ms = reference_round()
                    if round_index:
                        reference.append(ms)
        client.close()
        window.shutdown()
        window.close()
        library.close()
    return {"benchmark": "priors", "others": args.others, "priors": args.priors, "rounds": args.rounds,
            "list_after_open_ms_median": round(statistics.median(listed), 1),
            "list_after_open_ms_best": round(min(listed), 1),
            "open_study_ms_median": round(statistics.median(layout), 1),
            "reference_find_ms_median": round(statistics.median(reference), 1),
            "reference_find_ms_best": round(min(reference), 1),
            "list_vs_reference": round(statistics.median(listed) / statistics.median(reference), 2),
            "target_ms": 2000, "exactly_the_priors_every_round": exact_all}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", type=int, default=300, help="studies of other patients on the PACS")
    parser.add_argument("--priors", type=int, default=5, help="older studies of the patient on the PACS")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    os.environ["TCP_NODELAY"] = "1"  # Orthanc (DCMTK) inherits it: see shared/MACHINE-NOTES.md
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # plain widgets: no X server needed
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
