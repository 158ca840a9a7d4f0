"""C-GET throughput: DCMTK getscu vs our lean SCU (viewer.pacs.fastget) vs the pynetdicom path (DimseClient).

    python benchmarks/cget.py [--instances 200] [--repeat 3] [--associations 2]

One Orthanc (TCP_NODELAY=1) holds one CT study of --instances 512x512 slices.  Each round runs, in turn:
getscu (/usr/bin/getscu, TCP_NODELAY=1) into a folder; the fast path into a folder (one association at STUDY
level, and --associations associations over the IMAGE-level SOP Instance UID list); the fast path into a
Library (store_bytes), both ways; the pynetdicom path into a folder.  Best of --repeat each.  Prints one JSON line:

- getscu_instances_per_s, pynetdicom_instances_per_s
- fast_protocol_only_instances_per_s  one association, STUDY level, the sink discards (the protocol alone)
- fast_study_instances_per_s        one association, STUDY level, into a folder
- fast_lanes_instances_per_s        --associations associations, IMAGE level (the UID list), into a folder
- fast_instances_per_s              the better of the two (the figure the target compares)
- fast_to_library_instances_per_s   the same two into a Library (fsync per instance), the better one
- ratio_fast_vs_getscu, ratio_fast_library_vs_getscu
- store_bytes_ms_per_instance       Library.store_bytes alone, on the same bytes (the store's own cost), and
  store_bytes_without_fsync_ms_per_instance, the same with os.fsync stubbed out (what durability costs)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--associations", type=int, default=2)
    args = parser.parse_args()
    if not Path(GETSCU).exists():
        raise SystemExit("cget.py: DCMTK's getscu is missing (apt-get install dcmtk)")
    os.environ["TCP_NODELAY"] = "1"  # Orthanc and getscu are DCMTK-based: without it, Nagle costs ~40 ms/instance

    import pydicom

    from viewer.library import Library
    from viewer.pacs.dimse import DimseClient
    from viewer.pacs.fastget import FastGetClient
    from viewer.pacs.orthanc import OrthancProcess

    n = args.instances
    times: dict[str, list[float]] = {k: [] for k in (
        "getscu", "fast_null", "fast_study", "fast_lanes", "fast_library_study", "fast_library_lanes", "pynetdicom")}
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

                def pynetdicom(out: Path = out) -> None:
                    assert DimseClient(node).get(study_uid, sink=folder_sink(out / "pnd")).completed == n

                for name, fn in (("getscu", getscu), ("fast_null", fast_null), ("fast_study", fast_study), ("fast_lanes", fast_lanes),
                                 ("fast_library_study", fast_library_study),
                                 ("fast_library_lanes", fast_library_lanes), ("pynetdicom", pynetdicom)):
                    times[name].append(timed(fn))
                shutil.rmtree(out)
        store_ms = bench_store(work / "store", files)
        with mock.patch("os.fsync"):  # what durability costs: the same store without any fsync
            store_no_fsync_ms = bench_store(work / "store-no-fsync", files)

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
        "pynetdicom_instances_per_s": rate["pynetdicom"],
        "ratio_fast_vs_getscu": round(fast_best / rate["getscu"], 3),
        "ratio_fast_library_vs_getscu": round(library_best / rate["getscu"], 3),
        "store_bytes_ms_per_instance": store_ms,
        "store_bytes_without_fsync_ms_per_instance": store_no_fsync_ms,
    }))


def bench_store(folder: Path, files: list[Path]) -> float:
    """Library.store_bytes alone (one thread), ms per instance: what the library costs without the network."""
    from viewer.library import Library

    blobs = [p.read_bytes() for p in files]
    library = Library.open(folder)
    try:
        started = time.perf_counter()
        for data in blobs:
            library.store_bytes(data)
        return round((time.perf_counter() - started) * 1000 / len(blobs), 3)
    finally:
        library.close()


if __name__ == "__main__":
    main()
