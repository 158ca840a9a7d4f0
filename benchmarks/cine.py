"""Cine at the acquisition's rate (issue 13): the rate a real Viewport shows, from its slice_painted timestamps.

    python benchmarks/cine.py [--seconds 10] [--size 256] [--frames 90]

Multi-frame ultrasound loops (``tests.dicom.generated.cine_dataset``: a moving square, every frame differs) are
stored in a fresh library, opened in an 800x800 Viewport and fully decoded first, then played for ``--seconds``
each.  Prints one JSON line:

- acquisition_30fps: Frame Time 33.33 ms on the acquisition's clock: ``achieved_fps`` (distinct frames painted per
  second, first to last paint), ``content_fps`` (frames the loop advanced per second, dropped ones included: the
  real-time speed), ``dropped`` (frames skipped) and the paint interval median and p95;
- reference_fixed_timer_30fps: the old path in the same run: a QTimer every round(1000/30) = 33 ms calling
  ``model.advance_cine`` (one frame per tick, never dropping, never catching up);
- vector_20_60: a Frame Time Vector alternating 20 and 60 ms: the median paint interval after each kind of step
  (should follow the vector);
- acquisition_120fps: Frame Time 8.33 ms (faster than a paint): content_fps stays 120 while frames are dropped.

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


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))] if values else float("nan")


def summarise(paints: list[tuple[float, int]], count: int) -> dict:
    """Figures from (time, index) of the paints of distinct frames."""
    if len(paints) < 2:
        return {"paints": len(paints)}
    duration = paints[-1][0] - paints[0][0]
    advanced = sum((b[1] - a[1]) % count for a, b in zip(paints, paints[1:], strict=False))
    intervals = [(b[0] - a[0]) * 1000 for a, b in zip(paints, paints[1:], strict=False)]
    return {"achieved_fps": round((len(paints) - 1) / duration, 2), "content_fps": round(advanced / duration, 2),
            "dropped": advanced - (len(paints) - 1), "paints": len(paints),
            "interval_ms_p50": round(statistics.median(intervals), 2),
            "interval_ms_p95": round(_percentile(intervals, 0.95), 2)}


def measure(args) -> dict:
    import pydicom
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from tests.dicom.generated import cine_dataset
    from viewer.library import Library
    from viewer.ui.series_source import open_series
    from viewer.ui.viewport import Viewport

    app = QApplication.instance() or QApplication([])
    vector = [0.0] + [20.0 if i % 2 else 60.0 for i in range(1, args.frames)]  # steps 20, 60, 20, 60, ...
    cases = {"acquisition_30fps": dict(frame_time=1000.0 / 30),
             "vector_20_60": dict(frame_time=None, vector=vector),
             "acquisition_120fps": dict(frame_time=1000.0 / 120)}
    out: dict = {"frames": args.frames, "size": args.size, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        library = Library.open(Path(tmp) / "library")
        uids = {}
        for name, kwargs in cases.items():
            ds = cine_dataset(args.frames, args.size, **kwargs)
            path = Path(tmp) / f"{name}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            library.store_file(path)
            uids[name] = ds.SeriesInstanceUID
        view = Viewport()
        view.resize(800, 800)
        view.show()
        app.processEvents()
        paints: list[tuple[float, int]] = []
        overlay: list[str] = []  # the overlay's rate line when playing stopped

        def on_paint(index: int) -> None:
            if not paints or paints[-1][1] != index:
                paints.append((time.monotonic(), index))

        view.slice_painted.connect(on_paint)

        def run(seconds: float, start, stop) -> list[tuple[float, int]]:
            paints.clear()
            start()
            loop = QEventLoop()
            QTimer.singleShot(int(seconds * 1000), loop.quit)
            loop.exec()
            shown = [t for t in view.overlay_lines()["bottom_right"] if t.startswith("Cine")]
            overlay[:] = shown
            stop()
            app.processEvents()
            return list(paints)

        def open_case(name: str):
            series = open_series(library, uids[name])
            series.preload(range(len(series)), threading.Event(), None)
            view.set_series(series)
            view.repaint()
            return series

        for name in ("acquisition_30fps", "vector_20_60", "acquisition_120fps"):
            series = open_case(name)
            m = view.model
            timing = m.acquisition_timing
            got = run(args.seconds, lambda m=m: m.set_playing(True), lambda m=m: m.set_playing(False))
            figures = summarise(got, len(series))
            figures["source"] = timing.source if timing else None
            figures["target_fps"] = round(timing.rate_fps, 2) if timing else None
            figures["overlay"] = overlay[0] if overlay else None
            if name == "vector_20_60":
                by_step: dict[float, list[float]] = {20.0: [], 60.0: []}
                for (t0, i0), (t1, i1) in zip(got, got[1:], strict=False):
                    if (i1 - i0) % len(series) == 1 and i1 > 0:  # one step, not across the loop's end
                        by_step[vector[i1]].append((t1 - t0) * 1000)
                figures["interval_ms_after_20_ms_step"] = round(statistics.median(by_step[20.0]), 2)
                figures["interval_ms_after_60_ms_step"] = round(statistics.median(by_step[60.0]), 2)
            out[name] = figures
            if name == "acquisition_30fps":
                # The old path, same series, same widget: a fixed QTimer at round(1000 / 30) ms, one frame a tick.
                m.set_index(0)
                timer = QTimer()
                timer.timeout.connect(m.advance_cine)
                old = run(args.seconds, lambda t=timer: t.start(round(1000 / 30)), timer.stop)
                out["reference_fixed_timer_30fps"] = summarise(old, len(series))
        view.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child and not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        if not shutil.which("xvfb-run"):
            raise SystemExit("cine.py: needs an X server or xvfb-run (apt-get install xvfb)")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, __file__, "--child",
               "--seconds", str(args.seconds), "--size", str(args.size), "--frames", str(args.frames)]
        raise SystemExit(subprocess.call(cmd))
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
