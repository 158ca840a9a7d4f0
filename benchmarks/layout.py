"""Linked 2x2 reading (issue 5): what linked scrolling costs against scrolling one viewport, in the same run.

    python benchmarks/layout.py [--slices 200] [--size 512]

Four 512x512 int16 CT series of one frame of reference (two with 1.25 mm slices, two with 2.5 mm) are stored in a
fresh library and fully decoded first, so that the figures are about the layout, not the decoder.  Prints one
JSON line:

- single_scroll_fps: a 1x1 layout at 800x800: ``model.set_index(i)`` + synchronous repaint, slice after slice;
- linked_scroll_fps: a 2x2 layout at 1600x1600 (four 800x800 viewports): the active viewport steps and the three
  others follow (nearest slice of their own series) and repaint: four paints per step;
- linked_ratio: linked_scroll_fps / single_scroll_fps (1.0 would mean linking is free; 0.25 is four viewports
  painted at the single-viewport cost each);
- link_update_ms_p50: the linking alone per step (nearest slices and reference lines, no painting).

Runs under Xvfb (started with xvfb-run when DISPLAY is unset).
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def store(library, slices: int, size: int) -> list[str]:
    from viewer.dicom.demo import ct_series_datasets, demo_uid

    frame = demo_uid("layout benchmark frame")
    uids = []
    for seed, step in ((0, 1.25), (1, 1.25), (2, 2.5), (3, 2.5)):
        count = slices if step == 1.25 else slices // 2
        for i, ds in enumerate(ct_series_datasets(count, size, size, seed=seed)):
            ds.FrameOfReferenceUID = frame
            ds.ImagePositionPatient = [0.0, 0.0, i * step]
            result = library.store_dataset(ds)
        uids.append(result.series_instance_uid)
    return uids


def measure(args) -> dict:
    from PySide6.QtWidgets import QApplication

    from viewer.library import Library
    from viewer.ui.layout import ViewportGrid
    from viewer.ui.series_source import open_series

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        library = Library.open(Path(tmp) / "library")
        uids = store(library, args.slices, args.size)
        series = [open_series(library, uid) for uid in uids]
        for s in series:  # decode everything first
            s.preload(range(len(s)), threading.Event(), None)
        grid = ViewportGrid()
        grid.resize(800, 800)
        grid.show()
        app.processEvents()
        active = grid.viewports[0]
        active.set_series(series[0])
        app.processEvents()

        def scroll(viewports) -> float:
            started = time.perf_counter()
            for i in range(len(series[0])):
                active.model.set_index(i)
                for v in viewports:
                    v.repaint()
            return len(series[0]) / (time.perf_counter() - started)

        scroll([active])  # warm up
        single = statistics.median(scroll([active]) for _ in range(3))
        grid.set_layout("2x2")
        grid.resize(1600, 1600)
        for v, s in zip(grid.viewports, series, strict=True):
            v.set_series(s)
        grid.set_active(active)
        app.processEvents()
        scroll(grid.viewports)
        linked = statistics.median(scroll(grid.viewports) for _ in range(3))
        followed = [v.model.index for v in grid.viewports]
        times = []
        for i in range(len(series[0])):
            started = time.perf_counter()
            active.model.set_index(i)
            times.append((time.perf_counter() - started) * 1000)
        grid.shutdown()
        library.close()
    return {"benchmark": "layout", "slices": args.slices, "size": args.size,
            "single_scroll_fps": round(single, 1), "linked_scroll_fps": round(linked, 1),
            "linked_ratio": round(linked / single, 2), "link_update_ms_p50": round(statistics.median(times), 3),
            "followed_indices": followed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child and not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            raise SystemExit("layout.py: needs an X server or xvfb-run (apt-get install xvfb)")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1920x24", sys.executable, __file__, "--child",
               "--slices", str(args.slices), "--size", str(args.size)]
        raise SystemExit(subprocess.call(cmd))
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
