"""C-GET throughput: DCMTK getscu vs our lean SCU (viewer.pacs.fastget), its paths into the library, and the engine.

    python benchmarks/cget.py [--instances 200] [--repeat 5] [--associations 2]

One Orthanc (TCP_NODELAY=1) holds one CT study of --instances 512x512 slices.  Each round runs, in turn:
getscu (/usr/bin/getscu, TCP_NODELAY=1) into a folder; the fast path into a folder (one association at STUDY
level, and --associations associations over the IMAGE-level SOP Instance UID list); the fast path into a
Library (store_bytes, one commit per instance), both ways; the same into a Library through a GroupWriter
(group commit); the engine (``viewer.pacs.retrieve.retrieve`` from the node as a cluster of one: lean C-FIND plan,
first/middle/last phase, lean C-GET, the one sink, group commit).  (pynetdicom's C-GET is no longer a path of the
viewer; benchmarks/retrieve.py has the whole-process figures.)  Each variant runs next to its own getscu run (and,
for the group-commit paths, getscu followed by sync(2)), before it in even rounds and after it in odd ones.
Best of --repeat each, and the per-round ratio to the adjacent getscu run (median, min, max).  Prints one
JSON line:

- getscu_instances_per_s
- fast_protocol_only_instances_per_s  one association, STUDY level, the sink discards (the protocol alone)
- fast_study_instances_per_s        one association, STUDY level, into a folder
- fast_lanes_instances_per_s        --associations associations, IMAGE level (the UID list), into a folder
- fast_instances_per_s              the better of the two (the figure the target compares)
- fast_to_library_instances_per_s   the same two into a Library (fsync per instance), the better one
- fast_to_library_group_instances_per_s  --associations associations into a Library through a GroupWriter
- library_default_instances_per_s   the engine (what the viewer runs), planning queries included
- plan_study_ms                     of which the planning C-FINDs (series, then IMAGE level), best of 3
- ratio_fast_vs_getscu, ratio_fast_library_vs_getscu (best of each; store_bytes sink)
- ratio_vs_getscu_into_library      {median, min, max, runs}: per round, getscu's time over the engine's
- ratio_group_vs_getscu_into_library  the same for the GroupWriter lanes alone (no planning queries)
- ratio_fast_vs_getscu_into_folder  the same for the fast path into a folder (lanes)
- ratio_vs_getscu_durable_into_library, ratio_group_vs_getscu_durable_into_library: the same against getscu
  followed by sync(2) (getscu leaves its files in the page cache; a library that must survive a crash cannot)
- disk_durable_mb_per_s             the disk's sustained write+fdatasync rate: the floor of any durable store
- median_s                          median seconds of every variant
- store_bytes_ms_per_instance       Library.store_bytes alone, on the same bytes (the store's own cost), and
  store_bytes_without_fsync_ms_per_instance, the same with os.fsync stubbed out (what durability costs)
- store_many_ms_per_instance        Library.store_many in batches of BATCH_INSTANCES_MAX (group commit alone)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))  # mifaslab: the lab package (test tools)

GETSCU = "/usr/bin/getscu"  # DCMTK's; the venv's pynetdicom installs a script of the same name


def write_study(folder: Path, n: int) -> list[Path]:
    import pydicom

    from viewer.dicom.demo import ct_series_datasets

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(ct_series_datasets(n, seed=7)):
        path = folder / f"{i:05d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def folder_sink(folder: Path) -> Callable[[bytes], None]:
    """Write each instance to its own file, as getscu does (no fsync)."""
    folder.mkdir(parents=True, exist_ok=True)

    def sink(data: bytes) -> None:
        with open(folder / f"{uuid.uuid4().hex}.dcm", "wb") as out:
            out.write(data)

    return sink


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # write back the previous run's files first, so that its writeback does not slow this one
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--associations", type=int, default=2)
    args = parser.parse_args()
    if not Path(GETSCU).exists():
        raise SystemExit("cget.py: DCMTK's getscu is missing (apt-get install dcmtk)")
    os.environ["TCP_NODELAY"] = "1"  # Orthanc and getscu are DCMTK-based: without it, Nagle costs ~40 ms/instance

    import pydicom

    from mifaslab.orthanc import OrthancProcess
    from viewer.library import Library
    from viewer.library.writer import GroupWriter
    from viewer.pacs.cluster import ClusterProfile
    from viewer.pacs.fastget import FastGetClient
    from viewer.pacs.resume import ResilientClient
    from viewer.pacs.retrieve import plan_study, retrieve

    n = args.instances
    times: dict[str, list[float]] = {k: [] for k in (
        "getscu", "getscu_durable", "fast_null", "fast_study", "fast_lanes", "fast_library_study", "fast_library_lanes",
        "fast_library_group", "library_default", "getscu:fast_null", "getscu:fast_study",
        "getscu:fast_lanes", "getscu:fast_library_study", "getscu:fast_library_lanes", "getscu:fast_library_group",
        "getscu:library_default", "getscu_durable:fast_library_group", "getscu_durable:library_default")}
    with tempfile.TemporaryDirectory(prefix="mifas-cget-") as tmp:
        work = Path(tmp)
        files = write_study(work / "src", n)
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        study_uid, series_uid = str(headers[0].StudyInstanceUID), str(headers[0].SeriesInstanceUID)
        sop_uids = [str(h.SOPInstanceUID) for h in headers]
        nbytes = sum(p.stat().st_size for p in files)
        with OrthancProcess(work / "orthanc") as orthanc:
            orthanc.upload(files)
            node = orthanc.node(calling_ae="MIFASBENCH")
            fast1 = FastGetClient(node, associations=1)
            fastn = FastGetClient(node, associations=args.associations)
            for r in range(args.repeat):
                out = work / f"out-{r}"

                def getscu(out: Path = out) -> None:
                    out = out / f"getscu-{uuid.uuid4().hex}"
                    (out / "getscu").mkdir(parents=True)
                    subprocess.run([GETSCU, "-aet", "GETSCU", "-aec", node.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                                    "-k", f"StudyInstanceUID={study_uid}", "-od", str(out / "getscu"), node.host,
                                    str(node.port)], check=True, capture_output=True, timeout=600)
                    assert len(list((out / "getscu").iterdir())) == n

                def fast_null() -> None:
                    assert fast1.get(study_uid, sink=lambda data: None).completed == n

                def fast_study(out: Path = out) -> None:
                    assert fast1.get(study_uid, sink=folder_sink(out / "fast1")).completed == n

                def fast_lanes(out: Path = out) -> None:
                    result = fastn.get(study_uid, series_uid, sop_uids, sink=folder_sink(out / "fastn"))
                    assert result.completed == n, result

                def fast_library_study(out: Path = out) -> None:
                    library = Library.open(out / "library1")
                    try:
                        assert fast1.get(study_uid, sink=library.store_bytes).completed == n
                    finally:
                        library.close()

                def fast_library_lanes(out: Path = out) -> None:
                    library = Library.open(out / "libraryn")
                    try:
                        result = fastn.get(study_uid, series_uid, sop_uids, sink=library.store_bytes)
                        assert result.completed == n, result
                    finally:
                        library.close()

                def fast_library_group(out: Path = out) -> None:
                    library = Library.open(out / "libraryg")
                    try:
                        with GroupWriter(library) as writer:
                            result = fastn.get(study_uid, series_uid, sop_uids, sink=writer)
                        assert result.completed == n and len(result.sop_instance_uids) == n, result
                    finally:
                        library.close()

                def library_default(out: Path = out) -> None:
                    library = Library.open(out / "libraryd")
                    try:
                        outcome = retrieve(ClusterProfile.of_node(node), study_uid, library=library)
                        assert outcome.complete and outcome.held == n, outcome.describe()
                    finally:
                        library.close()

                def getscu_durable(out: Path = out) -> None:
                    getscu(out)
                    os.sync()  # the same bytes made durable: the reference for a store that must be

                references = {"getscu": getscu, "getscu_durable": getscu_durable}
                variants = [("fast_null", fast_null, ("getscu",)), ("fast_study", fast_study, ("getscu",)),
                            ("fast_lanes", fast_lanes, ("getscu",)),
                            ("fast_library_study", fast_library_study, ("getscu",)),
                            ("fast_library_lanes", fast_library_lanes, ("getscu",)),
                            ("fast_library_group", fast_library_group, ("getscu", "getscu_durable")),
                            ("library_default", library_default, ("getscu", "getscu_durable"))]
                # Each variant runs next to its own reference run(s), first in even rounds and last in odd ones:
                # this disk writes its first ~200 MB fast and then slows to its sustained rate, so what ran just
                # before matters; a pair shares its conditions.
                for name, fn, refs in variants:
                    pair = [(ref, references[ref]) for ref in refs]
                    pair = [(name, fn), *pair] if r % 2 == 0 else [*pair, (name, fn)]
                    for key, run in pair:
                        seconds = timed(run)
                        times[key if key == name else f"{key}:{name}"].append(seconds)
                        if key != name:
                            times[key].append(seconds)
                    shutil.rmtree(out, ignore_errors=True)
            profile = ClusterProfile.of_node(node)
            plan_s = min(timed(lambda: plan_study(ResilientClient(profile).find, study_uid, None, None))
                         for _ in range(3))
        store_ms = bench_store(work / "store", files)
        with mock.patch("os.fsync"):  # what durability costs: the same store without any fsync
            store_no_fsync_ms = bench_store(work / "store-no-fsync", files)
        store_many_ms = bench_store(work / "store-many", files, batched=True)
        disk_mb_per_s = bench_disk(work / "disk", files)

    best = {k: min(v) for k, v in times.items()}
    rate = {k: round(n / v, 1) for k, v in best.items()}
    fast_best = max(rate["fast_study"], rate["fast_lanes"])
    library_best = max(rate["fast_library_study"], rate["fast_library_lanes"])
    print(json.dumps({
        "benchmark": "cget", "instances": n, "mb": round(nbytes / 1e6, 1), "repeat": args.repeat,
        "associations": args.associations, "cpu_count": os.cpu_count(),
        "getscu_instances_per_s": rate["getscu"],
        "fast_protocol_only_instances_per_s": rate["fast_null"],
        "fast_study_instances_per_s": rate["fast_study"],
        "fast_lanes_instances_per_s": rate["fast_lanes"],
        "fast_instances_per_s": fast_best,
        "fast_to_library_instances_per_s": library_best,
        "fast_to_library_study_instances_per_s": rate["fast_library_study"],
        "fast_to_library_lanes_instances_per_s": rate["fast_library_lanes"],
        "ratio_fast_vs_getscu": round(fast_best / rate["getscu"], 3),
        "ratio_fast_library_vs_getscu": round(library_best / rate["getscu"], 3),
        "store_bytes_ms_per_instance": store_ms,
        "store_bytes_without_fsync_ms_per_instance": store_no_fsync_ms,
        "store_many_ms_per_instance": store_many_ms,
        "fast_to_library_group_instances_per_s": rate["fast_library_group"],
        "library_default_instances_per_s": rate["library_default"],
        "plan_study_ms": round(plan_s * 1000, 1),
        "ratio_vs_getscu_into_library": per_round_ratio(times["getscu:library_default"], times["library_default"]),
        "ratio_group_vs_getscu_into_library": per_round_ratio(times["getscu:fast_library_group"], times["fast_library_group"]),
        "ratio_fast_vs_getscu_into_folder": per_round_ratio(times["getscu:fast_lanes"], times["fast_lanes"]),
        "ratio_vs_getscu_durable_into_library": per_round_ratio(times["getscu_durable:library_default"],
                                                                times["library_default"]),
        "ratio_group_vs_getscu_durable_into_library": per_round_ratio(times["getscu_durable:fast_library_group"],
                                                                       times["fast_library_group"]),
        "disk_durable_mb_per_s": disk_mb_per_s,
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items() if ":" not in k},
    }))


def per_round_ratio(reference: list[float], ours: list[float]) -> dict[str, float | int]:
    """Throughput ratio per round (the reference's time over ours, measured next to each other): > 1 is faster."""
    ratios = [r / o for r, o in zip(reference, ours, strict=True)]
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
            "max": round(max(ratios), 3), "runs": len(ratios)}


def bench_disk(folder: Path, files: list[Path], rounds: int = 3) -> float:
    """The disk's rate for the study's bytes written and fdatasync'ed in one file, MB/s, median of `rounds`
    after as many warm-up rounds (this disk is fast for its first few hundred MB, then slower): the floor
    for any retrieval that makes the study durable before it returns."""
    data = b"".join(p.read_bytes() for p in files)
    folder.mkdir()
    rates = []
    for i in range(2 * rounds):
        os.sync()
        started = time.perf_counter()
        with open(folder / f"{i}.bin", "wb") as out:
            out.write(data)
            out.flush()
            os.fdatasync(out.fileno())
        rates.append(len(data) / 1e6 / (time.perf_counter() - started))
    return round(statistics.median(rates[rounds:]), 1)


def bench_store(folder: Path, files: list[Path], batched: bool = False) -> float:
    """Library.store_bytes (or store_many) alone, one thread, ms per instance: the library without the network."""
    from viewer.library import Library
    from viewer.library.writer import BATCH_INSTANCES_MAX

    blobs = [p.read_bytes() for p in files]
    library = Library.open(folder)
    try:
        os.sync()
        started = time.perf_counter()
        if batched:
            for i in range(0, len(blobs), BATCH_INSTANCES_MAX):
                library.store_many(blobs[i:i + BATCH_INSTANCES_MAX])
        for data in blobs if not batched else ():
            library.store_bytes(data)
        return round((time.perf_counter() - started) * 1000 / len(blobs), 3)
    finally:
        library.close()


if __name__ == "__main__":
    main()
