"""Cine export (issue 14): time and peak memory to write a 300-frame 512x512 series as an MP4 and an animated PNG.

    python benchmarks/export_movie.py [--frames 300] [--size 512] [--repeat 2]

A series of ``--frames`` CT slices of ``--size`` squared (16-bit: a ramp over -1000..2000 HU with Gaussian noise of
20 HU, so the encoder has real detail to code; the file's window 500/3200 shows all of it) is stored in a fresh library.  Each case
runs in its own Python process, so its peak resident size (``ru_maxrss``) is its own:

- reference_decode: ``series_frames`` alone (decode + window every frame, one instance at a time), frames dropped;
- mp4: the same frames through ``write_mp4`` (PyAV, libx264 CRF 18, preset medium);
- apng: the same frames through ``write_apng`` (streamed, Pillow's PNG encoder per frame);
- apng_pillow_save_all: for comparison, Pillow's own APNG writer (``save_all``), which holds every frame.

Prints one JSON line: per case the best wall time of ``--repeat`` runs (s), frames per second, peak RSS (MiB) and
the file size (MiB), and the export / reference ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINDOW = (500.0, 3200.0)  # the whole ramp visible, noise and all (a narrow window would clip most of it)
CASES = ("reference_decode", "mp4", "apng", "apng_pillow_save_all")


def make_series(folder: Path, frames: int, size: int) -> tuple[Path, str]:
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from tests.ui.conftest import RESCALE_INTERCEPT, ct_dataset
    from viewer.library import Library

    rng = np.random.default_rng(14)
    study_uid, series_uid = generate_uid(), generate_uid()
    y, x = np.mgrid[0:size, 0:size]
    library_root = folder / "library"
    library = Library.open(library_root)
    for i in range(frames):
        ds = ct_dataset(i, frames, rows=size, cols=size, study_uid=study_uid, series_uid=series_uid,
                        window=WINDOW)
        hu = -1000.0 + 3000.0 * (x + y) / (2 * size - 2) + 7.0 * i + rng.normal(0.0, 20.0, (size, size))
        ds.PixelData = np.round(hu - RESCALE_INTERCEPT).astype(np.int16).tobytes()
        path = folder / f"ct{i:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        library.store_file(path)
        path.unlink()
    library.close()
    return library_root, series_uid


def run_case(case: str, library_root: Path, series_uid: str, out: Path) -> dict:
    """One case in this process: wall time, frames, file size; the parent reads our peak RSS."""
    from viewer.library import Library
    from viewer.share.movie import series_timing_for, write_apng, write_mp4
    from viewer.share.pictures import PNG_COMPRESS_LEVEL, series_frames

    library = Library.open(library_root)
    timing = series_timing_for(library, series_uid)
    start = time.perf_counter()
    if case == "reference_decode":
        count = sum(1 for _ in series_frames(library, series_uid))
    elif case == "mp4":
        count = write_mp4(series_frames(library, series_uid), timing, out)
    elif case == "apng":
        count = write_apng(series_frames(library, series_uid), timing, out)
    else:
        from PIL import Image

        images = (Image.fromarray(f) for f in series_frames(library, series_uid))
        first = next(images)
        step = timing.period_ms / timing.frames
        first.save(out, format="PNG", save_all=True, append_images=list(images), duration=step, loop=0,
                   compress_level=PNG_COMPRESS_LEVEL)
        count = timing.frames
    seconds = time.perf_counter() - start
    library.close()
    size = out.stat().st_size if out.exists() else 0
    return {"seconds": seconds, "frames": count, "file_mib": round(size / 2**20, 2)}


def measure(args) -> dict:
    result: dict = {"frames": args.frames, "size": args.size, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        library_root, series_uid = make_series(folder, args.frames, args.size)
        for case in CASES:
            best: dict | None = None
            for _ in range(args.repeat):
                out = folder / f"{case}.out"
                proc = subprocess.run(
                    [sys.executable, __file__, "--case", case, "--library", str(library_root), "--series",
                     series_uid, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, check=True)
                figures = json.loads(proc.stdout.strip().splitlines()[-1])
                out.unlink(missing_ok=True)
                if best is None or figures["seconds"] < best["seconds"]:
                    best = figures
            assert best is not None
            best["fps"] = round(best["frames"] / best["seconds"], 1)
            best["seconds"] = round(best["seconds"], 2)
            result[case] = best
    reference = result["reference_decode"]["seconds"]
    for case in CASES[1:]:
        result[f"{case}_vs_reference"] = round(result[case]["seconds"] / reference, 2)
    return result


def child(args) -> None:
    figures = run_case(args.case, Path(args.library), args.series, Path(args.out))
    figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--series", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args)
    else:
        print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
