"""The one retrieval engine against DCMTK, whole processes included, and co-allocation over shaped links.

    python benchmarks/retrieve.py [--instances 200] [--rounds 5] [--coalloc-instances 100] [--memory-instances 5000]
                                  [--skip-coalloc] [--skip-memory]

Everything is measured in this run, next to its reference, and printed as one JSON line.

Single node (one local Orthanc, TCP_NODELAY=1, --instances 512x512 CT slices): each round runs, in an order that
alternates from round to round,
- ``getscu``: DCMTK's /usr/bin/getscu (TCP_NODELAY=1) as a whole process, STUDY level, into a folder;
- ``getscu_sync``: the same followed by sync(2) (getscu leaves its files in the page cache; a library must not);
- ``engine``: ``viewer.pacs.retrieve.retrieve`` from the node as a cluster of one into a fresh library, in this
  process: plan (lean C-FIND), first/middle/last, lean C-GET, InstanceSink, group commit (durable);
- ``cli``: ``mifas-pacs get --node ... --library DIR`` as a whole process (start-up and imports included), with
  bytecode as an installed copy has it (the .deb compiles every module at install; here the warm-up run caches
  it under the work folder: PYTHONPYCACHEPREFIX).
Figures: ``single_ratio_vs_getscu`` (median over rounds of getscu's time over the engine's: > 1 is faster),
``single_ratio_vs_getscu_sync``, ``cli_wall_ratio_vs_getscu`` (getscu's time over the whole mifas-pacs process's),
``cli_library_ratio_vs_getscu`` (the same without the interpreter's start-up and imports, ``cli_import_s``),
``cli_startup_s`` (``mifas-pacs --version``, median of 7), ``plan_ratio_vs_findscu`` (planning the study with the
engine's queries, in process, over DCMTK findscu's IMAGE-level query as a whole process).

Co-allocation (root: mifaslab.netns.shaped, two Orthanc replicas behind 60 and 100 Mbit/s links): the study
(--coalloc-instances 512x512 slices) from replica a alone, from replica b alone, and from both at once
(``coalloc_ratio_vs_sum``: co-allocated throughput over the sum of the two single ones; ``coalloc_ratio_vs_best``:
over the better one), then with replica a killed after a quarter of the images (``coalloc_kill_ok``: complete,
every instance once).

Memory: peak resident size of ``mifas-pacs get --library`` as a whole process for 200 and --memory-instances
small (64x64) instances: ``instances_5000_rss_mib``, ``instances_200_rss_mib`` and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
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

GETSCU = "/usr/bin/getscu"  # DCMTK's; the venv's pynetdicom installs a script of the same name
FINDSCU = "/usr/bin/findscu"
MIFAS_PACS = Path(sys.executable).parent / "mifas-pacs"
CALLING_AE = "MIFASBENCH"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def installed_env(work: Path) -> dict[str, str]:
    """The environment of a command-line run as installed: with bytecode (the .deb compiles every module at
    install; this checkout's are cached under `work`, outside the repository, by the warm-up run)."""
    env = {**ENV, "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def datasets(n: int, size: int, seed: int) -> list[bytes]:
    import pydicom

    from viewer.dicom.demo import ct_series_datasets

    out = []
    for ds in ct_series_datasets(n, rows=size, cols=size, seed=seed):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def study_of(data: bytes) -> tuple[str, str]:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def wall(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=900, env=env or ENV)
    return time.perf_counter() - started


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # the previous run's writeback must not slow this one
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ratios(reference: list[float], ours: list[float]) -> dict[str, float]:
    values = [r / o for r, o in zip(reference, ours, strict=True)]
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def single_node(work: Path, n: int, rounds: int) -> dict[str, object]:
    from mifaslab.orthanc import OrthancProcess
    from viewer.library import Library
    from viewer.pacs.cluster import ClusterProfile
    from viewer.pacs.resume import ResilientClient
    from viewer.pacs.retrieve import plan_study, retrieve

    work.mkdir(parents=True, exist_ok=True)
    cli_env = installed_env(work)
    parts = datasets(n, 512, seed=7)
    study_uid, series_uid = study_of(parts[0])
    times: dict[str, list[float]] = {k: [] for k in ("getscu", "getscu_sync", "engine", "cli", "findscu", "plan")}
    with OrthancProcess(work / "orthanc", aet="ORTHANCB") as orthanc:
        for data in parts:
            orthanc.upload_bytes(data)
        node = orthanc.node(calling_ae=CALLING_AE)
        profile = ClusterProfile.of_node(node, "get")
        address = ["-aet", CALLING_AE, "-aec", node.ae_title, node.host, str(node.port)]
        settings = work / "settings.json"
        settings.write_text("{}", encoding="utf-8")

        def getscu(sync: bool = False) -> None:
            out = Path(tempfile.mkdtemp(dir=work))
            subprocess.run([GETSCU, *address, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                            "-od", str(out)], check=True, capture_output=True, timeout=600, env=ENV)
            assert len(list(out.iterdir())) == n
            if sync:
                os.sync()

        def engine() -> None:
            with Library.open(Path(tempfile.mkdtemp(dir=work)) / "lib") as library:
                outcome = retrieve(profile, study_uid, library=library)
                assert outcome.complete and outcome.held == n, outcome.describe()

        def cli() -> None:
            library = Path(tempfile.mkdtemp(dir=work)) / "lib"
            subprocess.run([str(MIFAS_PACS), "get", "--config", str(settings), "--calling-ae", CALLING_AE,
                            "--node", f"{node.ae_title}@{node.host}:{node.port}", "--study", study_uid,
                            "--library", str(library)], check=True, capture_output=True, timeout=600,
                           env=cli_env)

        def findscu() -> None:
            subprocess.run([FINDSCU, "-S", *address, "-k", "QueryRetrieveLevel=IMAGE",
                            "-k", f"StudyInstanceUID={study_uid}", "-k", f"SeriesInstanceUID={series_uid}",
                            "-k", "SOPInstanceUID", "-k", "SOPClassUID", "-k", "InstanceNumber"],
                           check=True, capture_output=True, timeout=600, env=ENV)

        def plan() -> None:  # as the engine plans: the study's SOP classes, then the series and their images
            client = ResilientClient(profile)
            rows = client.find("study", {"StudyInstanceUID": study_uid, "SOPClassesInStudy": ""}, limit=2)
            classes = frozenset(rows[0].get("SOPClassesInStudy", "").split("\\")) - {""}
            plans = plan_study(client.find, study_uid, None, None, classes)
            assert sum(len(p.ordered) for p in plans) == n

        variants = [("getscu", getscu), ("getscu_sync", lambda: getscu(sync=True)), ("engine", engine),
                    ("cli", cli), ("findscu", findscu), ("plan", plan)]
        for _name, fn in variants:  # warm-up: page cache, Orthanc's own caches, first imports
            fn()
        for r in range(rounds):
            for name, fn in (variants if r % 2 == 0 else list(reversed(variants))):
                times[name].append(timed(fn))
            for folder in work.iterdir():
                if folder.is_dir() and folder.name.startswith("tmp"):
                    shutil.rmtree(folder, ignore_errors=True)
    startup = statistics.median(wall([str(MIFAS_PACS), "--version"], cli_env) for _ in range(7))
    imports = statistics.median(wall([sys.executable, "-c", "import viewer.pacs.cli, viewer.pacs.retrieve, "
                                      "viewer.library.jobs, viewer.pacs.fastget, viewer.pacs.fastfind, "
                                      "viewer.pacs.resume"], cli_env) for _ in range(5))
    cli_net = [max(c - imports, 1e-3) for c in times["cli"]]
    nbytes = sum(len(p) for p in parts)
    return {
        "instances": n, "mb": round(nbytes / 1e6, 1), "rounds": rounds,
        "single_ratio_vs_getscu": ratios(times["getscu"], times["engine"])["median"],
        "single_ratio_vs_getscu_per_round": ratios(times["getscu"], times["engine"]),
        "single_ratio_vs_getscu_sync": ratios(times["getscu_sync"], times["engine"])["median"],
        "cli_wall_ratio_vs_getscu": ratios(times["getscu"], times["cli"])["median"],
        "cli_library_ratio_vs_getscu": ratios(times["getscu"], cli_net)["median"],
        "cli_startup_s": round(startup, 3), "cli_import_s": round(imports, 3),
        "plan_ratio_vs_findscu": round(statistics.median(times["plan"]) / statistics.median(times["findscu"]), 3),
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
    }


def coalloc(work: Path, n: int, rounds: int) -> dict[str, object]:
    from mifaslab.netns.host import network_namespace
    from mifaslab.netns.shaped import ShapedReplicas
    from viewer.library import Library
    from viewer.pacs.cluster import ClusterAddress, ClusterProfile
    from viewer.pacs.node import Timeouts
    from viewer.pacs.retrieve import retrieve

    work.mkdir(parents=True, exist_ok=True)
    parts = datasets(n, 512, seed=11)
    study_uid, _ = study_of(parts[0])
    nbytes = sum(len(p) for p in parts)
    timeouts = Timeouts(connect_s=1.0, acse_s=3.0, dimse_s=5.0, network_s=10.0)
    seconds: dict[str, list[float]] = {"a": [], "b": [], "both": []}
    with ShapedReplicas(work / "bed", rates_mbit=(60, 100), prefix="mifascabench") as bed:
        bed.upload(parts)
        addresses = [ClusterAddress(r.host, r.dicom_port, name=r.name, ae_title=r.aet) for r in bed.replicas]

        def profile(sources: list[ClusterAddress]) -> ClusterProfile:
            return ClusterProfile(name="bench", vip=addresses[0], members=tuple(addresses[1:]),
                                  ae_title=bed.replicas[0].aet, calling_ae=CALLING_AE, timeouts=timeouts,
                                  replicas=tuple(sources) if len(sources) > 1 else ())

        singles = {"a": ClusterProfile(name="a", vip=addresses[0], ae_title=bed.replicas[0].aet,
                                       calling_ae=CALLING_AE, timeouts=timeouts),
                   "b": ClusterProfile(name="b", vip=addresses[1], ae_title=bed.replicas[1].aet,
                                       calling_ae=CALLING_AE, timeouts=timeouts),
                   "both": profile(addresses)}
        shares: list[dict[str, int]] = []
        with network_namespace(bed.lan):
            for r in range(rounds):
                for key in (("a", "b", "both") if r % 2 == 0 else ("both", "b", "a")):
                    with Library.open(Path(tempfile.mkdtemp(dir=work)) / "lib") as library:
                        started = time.perf_counter()
                        outcome = retrieve(singles[key], study_uid, library=library)
                        seconds[key].append(time.perf_counter() - started)
                        assert outcome.complete and outcome.held == n, outcome.describe()
                        if key == "both":
                            shares.append({s.name: s.instances for s in outcome.sources})
            killed = {"done": False}

            def progress(done: int, total: int | None) -> None:
                if done >= n // 4 and not killed["done"]:
                    killed["done"] = True
                    bed.kill(0)

            with Library.open(Path(tempfile.mkdtemp(dir=work)) / "lib") as library:
                outcome = retrieve(singles["both"], study_uid, library=library, progress=progress)
                kill_ok = (killed["done"] and outcome.complete and len(list(library.iter_instances())) == n
                           and library.fsck() == {"orphans_removed": 0, "missing": 0})
    rate = {k: nbytes / 1e6 / statistics.median(v) for k, v in seconds.items()}
    return {
        "coalloc_instances": n, "coalloc_mb": round(nbytes / 1e6, 1), "coalloc_rounds": rounds,
        "coalloc_mb_per_s": {k: round(v, 2) for k, v in rate.items()},
        "coalloc_ratio_vs_sum": round(rate["both"] / (rate["a"] + rate["b"]), 3),
        "coalloc_ratio_vs_best": round(rate["both"] / max(rate["a"], rate["b"]), 3),
        "coalloc_shares": shares,
        "coalloc_kill_ok": bool(kill_ok),
    }


def memory(work: Path, large: int) -> dict[str, object]:
    from mifaslab.orthanc import OrthancProcess

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, float] = {}
    for count in (200, large):
        parts = datasets(count, 64, seed=13)
        study_uid, _ = study_of(parts[0])
        with OrthancProcess(work / f"orthanc-{count}", aet="ORTHANCM") as orthanc:
            for data in parts:
                orthanc.upload_bytes(data)
            node = orthanc.node(calling_ae=CALLING_AE)
            settings = work / "settings.json"
            settings.write_text("{}", encoding="utf-8")
            probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True);"
                     " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            done = subprocess.run([sys.executable, "-c", probe, str(MIFAS_PACS), "get", "--config", str(settings),
                                   "--calling-ae", CALLING_AE, "--node", f"{node.ae_title}@{node.host}:{node.port}",
                                   "--study", study_uid, "--library", str(work / f"lib-{count}")],
                                  check=True, capture_output=True, text=True, timeout=1800,
                                  env=installed_env(work))
            out[str(count)] = int(done.stdout.split()[-1]) / 1024  # KiB -> MiB
    return {"instances_200_rss_mib": round(out["200"], 1), f"instances_{large}_rss_mib": round(out[str(large)], 1),
            "rss_ratio_large_vs_200": round(out[str(large)] / out["200"], 3), "memory_large_instances": large}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--coalloc-instances", type=int, default=100)
    parser.add_argument("--coalloc-rounds", type=int, default=2)
    parser.add_argument("--memory-instances", type=int, default=5000)
    parser.add_argument("--skip-coalloc", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    for tool in (GETSCU, FINDSCU):
        if not Path(tool).exists():
            raise SystemExit(f"retrieve.py: DCMTK's {tool} is missing (apt-get install dcmtk)")
    if not MIFAS_PACS.exists():
        raise SystemExit("retrieve.py: run it with the project's virtualenv (bash packaging/test.sh installs it)")
    os.environ["TCP_NODELAY"] = "1"  # Orthanc is DCMTK-based: without it, Nagle costs ~40 ms per instance
    result: dict[str, object] = {"benchmark": "retrieve", "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="mifas-retrieve-") as tmp:
        work = Path(tmp)
        result.update(single_node(work / "single", args.instances, args.rounds))
        if not args.skip_coalloc:
            if os.geteuid() != 0:
                raise SystemExit("retrieve.py: co-allocation needs root (network namespaces); or --skip-coalloc")
            result.update(coalloc(work / "coalloc", args.coalloc_instances, args.coalloc_rounds))
        if not args.skip_memory:
            result.update(memory(work / "memory", args.memory_instances))
    print(json.dumps(result))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    main()
