"""Planning query: DCMTK findscu vs our lean C-FIND (viewer.pacs.fastfind) vs pynetdicom's C-FIND.

    python benchmarks/find.py [--instances 200] [--rounds 21]

One Orthanc (TCP_NODELAY=1) holds one CT study of --instances 512x512 slices.  Each round runs, in an order
that rotates from round to round, the IMAGE-level query that plans a retrieval of that study (Study Instance
UID and Series Instance UID given; SOP Instance UID, SOP Class UID and Instance Number asked for):

- findscu     /usr/bin/findscu -S as a whole process (TCP_NODELAY=1), its output discarded
- lean        FastFindClient.find("image", ...) in this process (what DimseClient.find runs)
- pynetdicom  pynetdicom's send_c_find with identifier_to_dict per match, in this process (the former path)

One warm-up round is not counted.  Prints one JSON line: best and median milliseconds of each,
plan_ratio_vs_findscu (the lean query's median time over findscu's median time: below 1 is faster),
the per-round ratio (median, min, max), and whether every match took the hand-written reader.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))  # mifaslab: the lab package (test tools)

FINDSCU = "/usr/bin/findscu"  # DCMTK's; the venv's pynetdicom installs a script of the same name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    if not Path(FINDSCU).exists():
        raise SystemExit("find.py: DCMTK's findscu is missing (apt-get install dcmtk)")
    os.environ["TCP_NODELAY"] = "1"  # Orthanc and findscu are DCMTK-based: without it, Nagle costs ~40 ms a message

    import io

    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    from mifaslab.orthanc import OrthancProcess
    from viewer.dicom.demo import ct_series_datasets
    from viewer.pacs import fastfind
    from viewer.pacs.contexts import UNCOMPRESSED_SYNTAXES
    from viewer.pacs.fastfind import FastFindClient
    from viewer.pacs.query import identifier_to_dict, query_identifier

    n = args.instances
    fallbacks: list[int] = []
    real_decode = fastfind.decode

    def counting_decode(*a: object) -> object:
        fallbacks.append(1)
        return real_decode(*a)  # type: ignore[arg-type]

    fastfind.decode = counting_decode  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="mifas-find-") as tmp, OrthancProcess(Path(tmp) / "orthanc") as orthanc:
        study_uid = series_uid = ""
        for ds in ct_series_datasets(n, seed=7):
            study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            orthanc.upload_bytes(buffer.getvalue())
        node = orthanc.node(calling_ae="MIFASBENCH")
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        findscu_command = [
            FINDSCU, "-aet", "FINDSCU", "-aec", node.ae_title, "-S", "-k", "QueryRetrieveLevel=IMAGE",
            "-k", f"StudyInstanceUID={study_uid}", "-k", f"SeriesInstanceUID={series_uid}", "-k", "SOPInstanceUID",
            "-k", "SOPClassUID", "-k", "InstanceNumber", node.host, str(node.port)]

        def findscu() -> None:
            subprocess.run(findscu_command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=120)

        def lean() -> None:
            rows = FastFindClient(node).find("image", keys)
            assert len(rows) == n and not rows.truncated, len(rows)

        model = StudyRootQueryRetrieveInformationModelFind

        def pynetdicom() -> None:
            ae = AE(ae_title=node.calling_ae)
            ae.add_requested_context(model, list(UNCOMPRESSED_SYNTAXES))
            assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
            assert assoc.is_established
            rows = [identifier_to_dict(identifier)
                    for status, identifier in assoc.send_c_find(query_identifier("image", keys).to_dataset(), model)
                    if "Status" in status and status.Status in (0xFF00, 0xFF01) and identifier is not None]
            assoc.release()
            assert len(rows) == n, len(rows)

        # findscu's own count, once: -v logs "Find Response: <i> (Pending)" for each match
        check = subprocess.run([*findscu_command[:1], "-v", *findscu_command[1:]], capture_output=True, text=True,
                               check=True, timeout=120)
        pending = (check.stdout + check.stderr).count("(Pending)")
        assert pending == n, f"findscu saw {pending} matches, not {n}"

        variants: list[tuple[str, Callable[[], None]]] = [("findscu", findscu), ("lean", lean),
                                                           ("pynetdicom", pynetdicom)]
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        for round_index in range(args.rounds + 1):
            shift = round_index % len(variants)
            for name, run in variants[shift:] + variants[:shift]:
                started = time.perf_counter()
                run()
                elapsed = time.perf_counter() - started
                if round_index:  # round 0 warms up (imports, Orthanc's caches)
                    times[name].append(elapsed)
        fallbacks_seen = len(fallbacks)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = [o / f for o, f in zip(times["lean"], times["findscu"], strict=True)]
    print(json.dumps({
        "benchmark": "find", "instances": n, "rounds": args.rounds, "cpu_count": os.cpu_count(),
        "plan_ratio_vs_findscu": round(median["lean"] / median["findscu"], 3),
        "plan_ratio_vs_findscu_per_round": {"median": round(statistics.median(ratios), 3),
                                            "min": round(min(ratios), 3), "max": round(max(ratios), 3)},
        "pynetdicom_ratio_vs_findscu": round(median["pynetdicom"] / median["findscu"], 3),
        "best_ms": {k: round(min(v) * 1000, 1) for k, v in times.items()},
        "median_ms": {k: round(m * 1000, 1) for k, m in median.items()},
        "lean_matches_per_s": round(n / median["lean"]),
        "hand_written_reader_for_every_match": fallbacks_seen == 0,
    }))


if __name__ == "__main__":
    main()
