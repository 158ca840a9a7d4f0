"""Reading benchmark (issue 2): import, first image, scroll, window/level, memory, C-GET vs DCMTK getscu.

    python benchmarks/reading.py [--slices 500] [--cget-instances 200] [--repeat 3] [--no-pacs]

Prints one JSON line.  Every figure that has a natural reference is measured against it in the same run, because
these machines are noisy:

- import_files_per_s         our import of an N-file 512x512 int16 CT series from disk into a fresh library;
  reference_copy_files_per_s the same files copied with read + write + fsync + rename (the floor of an atomic store).
- first_image_ms             a fresh process opens the series (nothing decoded) in the real Viewport and paints slice 0.
- scroll_fps                 Viewport repaints slice after slice (W/L applied, overlays on) at 800x800;
  reference_loop_fps         a plain numpy LUT + QImage + QPainter loop in a bare widget of the same size.
- wl_ms_p50                  median of (model.drag_window + synchronous repaint) while "dragging".
- mem_ratio                  RSS growth after the whole series is decoded / raw pixel bytes.
- cget_ratio_vs_getscu       our C-GET throughput for an M-instance CT study from a local Orthanc divided by
                             DCMTK getscu's on the same study in the same run (best of --repeat for each).

The viewer figures are taken in a child process under Xvfb (started with xvfb-run when DISPLAY is unset), so that
its memory baseline and its caches are cold.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "packaging" / "lab"))  # mifaslab: the lab package (test tools)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def write_series(folder: Path, n: int, *, seed: int = 0) -> list[Path]:
    import pydicom

    from viewer.dicom.demo import ct_series_datasets

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(ct_series_datasets(n, seed=seed)):
        p = folder / f"{i:05d}.dcm"
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
        paths.append(p)
    return paths


def drop_caches() -> None:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass  # not root: measure with a warm cache, as a user's second open would be


def bench_import(files: list[Path], work: Path) -> dict[str, float]:
    from viewer.library import Library, import_paths

    drop_caches()
    copy_dir = work / "copy"
    copy_dir.mkdir()
    t0 = time.perf_counter()
    for p in files:
        tmp = copy_dir / (p.name + ".part")
        with open(p, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, copy_dir / p.name)
    ref_s = time.perf_counter() - t0
    shutil.rmtree(copy_dir)

    drop_caches()
    library = Library.open(work / "library")
    t0 = time.perf_counter()
    summary = import_paths(library, [files[0].parent])
    import_s = time.perf_counter() - t0
    assert summary.added == len(files), summary.describe()
    library.close()
    return {"import_files_per_s": round(len(files) / import_s, 1),
            "reference_copy_files_per_s": round(len(files) / ref_s, 1)}


def viewer_child(library_dir: Path) -> dict[str, float]:
    """Runs in a fresh process under a real X server (Xvfb)."""
    import threading

    import numpy as np
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QApplication, QWidget

    from viewer.dicom.series import SeriesImages, order_frames
    from viewer.library import Library
    from viewer.ui.viewport import Viewport

    app = QApplication.instance() or QApplication(["bench"])
    library = Library.open(library_dir)
    study = library.studies()[0]
    series_uid = library.series(study.study_uid)[0].series_uid
    records = library.instances(series_uid)
    frames = order_frames(records)

    view = Viewport()
    view.resize(800, 800)
    view.show()
    app.processEvents()
    drop_caches()
    rss0 = rss_bytes()

    t0 = time.perf_counter()
    series = SeriesImages(frames)
    view.set_series(series)
    view.repaint()
    first_ms = (time.perf_counter() - t0) * 1000
    assert view.painted_index == 0, "the first slice was not painted"

    deadline = time.monotonic() + 120
    while series.loaded_count() < len(series) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    assert series.loaded_count() == len(series), "the series did not finish loading"
    raw_bytes = sum(int(series.stored(i).nbytes) for i in range(len(series)))
    mem_ratio = (rss_bytes() - rss0) / raw_bytes

    view.model.apply_preset("CT abdomen")
    n = len(series)
    t0 = time.perf_counter()
    for i in range(n):
        view.model.set_index(i)
        view.repaint()
    scroll_fps = n / (time.perf_counter() - t0)
    assert view.painted_index == n - 1

    wl = []
    for k in range(300):
        t0 = time.perf_counter()
        view.model.drag_window(3 if k % 40 < 20 else -3, 2 if k % 60 < 30 else -2)
        view.repaint()
        wl.append((time.perf_counter() - t0) * 1000)

    # Reference: the plainest loop that shows the same slices with a LUT, in a bare widget of the same size.
    stored = [series.stored(i) for i in range(n)]
    lut = np.clip((np.arange(65536, dtype=np.float64) - 32768 + 1024 - 200) / 400 * 255, 0, 255).astype(np.uint8)

    class Bare(QWidget):
        img: np.ndarray | None = None

        def paintEvent(self, _event) -> None:
            p = QPainter(self)
            a = self.img
            q = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8)
            p.drawImage(self.rect(), q)
            p.end()

    bare = Bare()
    bare.resize(800, 800)
    bare.show()
    app.processEvents()
    t0 = time.perf_counter()
    for a in stored:
        bare.img = lut[a.view(np.uint16) ^ 0x8000]
        bare.repaint()
    ref_fps = n / (time.perf_counter() - t0)

    view.shutdown()
    library.close()
    del threading
    QCoreApplication.processEvents()
    return {
        "first_image_ms": round(first_ms, 1),
        "scroll_fps": round(scroll_fps, 1),
        "reference_loop_fps": round(ref_fps, 1),
        "scroll_ratio_vs_reference": round(scroll_fps / ref_fps, 3),
        "wl_ms_p50": round(statistics.median(wl), 2),
        "mem_ratio": round(mem_ratio, 3),
        "series_raw_bytes": raw_bytes,
    }


def run_viewer_child(library_dir: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child-viewer", str(library_dir)]
    if not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            raise SystemExit("reading.py: needs an X server or xvfb-run (apt-get install xvfb)")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_cget(n: int, repeat: int, work: Path) -> dict[str, float]:
    from mifaslab.orthanc import OrthancProcess
    from viewer.library import Library
    from viewer.pacs.dimse import DimseClient

    getscu = "/usr/bin/getscu"
    if not Path(getscu).exists():
        raise SystemExit("reading.py: DCMTK's getscu is missing (apt-get install dcmtk)")
    files = write_series(work / "cget-src", n, seed=7)
    nbytes = sum(p.stat().st_size for p in files)
    env = dict(os.environ, TCP_NODELAY="1")
    os.environ["TCP_NODELAY"] = "1"
    with OrthancProcess(work / "orthanc") as orthanc:
        orthanc.upload(files)
        import pydicom

        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        node = orthanc.node(calling_ae="MIFASBENCH")
        ours, theirs = [], []
        for r in range(repeat):
            out = work / f"getscu-{r}"
            out.mkdir()
            t0 = time.perf_counter()
            subprocess.run([getscu, "-aet", "GETSCU", "-aec", node.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={study_uid}", "-od", str(out), node.host, str(node.port)],
                           check=True, env=env, capture_output=True, timeout=600)
            theirs.append(time.perf_counter() - t0)
            got = len(list(out.iterdir()))
            assert got == n, f"getscu received {got} of {n}"
            shutil.rmtree(out)

            library = Library.open(work / f"lib-{r}")
            t0 = time.perf_counter()
            result = DimseClient(node).get(study_uid, sink=library.store_bytes)
            ours.append(time.perf_counter() - t0)
            assert result.completed == n, result
            library.close()
            shutil.rmtree(work / f"lib-{r}")
    best_ours, best_theirs = min(ours), min(theirs)
    return {
        "cget_instances": n,
        "cget_mb": round(nbytes / 1e6, 1),
        "cget_instances_per_s": round(n / best_ours, 1),
        "getscu_instances_per_s": round(n / best_theirs, 1),
        "cget_ratio_vs_getscu": round(best_theirs / best_ours, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--cget-instances", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pacs", action="store_true", help="skip the C-GET comparison")
    parser.add_argument("--child-viewer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_viewer:
        print(json.dumps(viewer_child(args.child_viewer)))
        return
    result: dict[str, object] = {"benchmark": "reading", "slices": args.slices, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="mifas-bench-") as tmp:
        work = Path(tmp)
        files = write_series(work / "series", args.slices)
        result.update(bench_import(files, work))
        result.update(run_viewer_child(work / "library"))
        if not args.no_pacs:
            result.update(bench_cget(args.cget_instances, args.repeat, work))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
