"""3D reading figures (issue 5): MPR update, volume rendering first frame and frame rate, memory.

    python benchmarks/render3d.py [--slices 300] [--size 512] [--mapper auto|cpu|gpu]

A synthetic 512x512x300 int16 CT (body ellipse, spine-like bone, lungs, 0.7 x 0.7 x 1.0 mm) as a
:class:`~viewer.dicom.volume.Volume`; offscreen VTK rendering (EGL or the X server in $DISPLAY).  Prints one JSON
line:

- mpr_update_ms_p50: the three MPR planes (axial, coronal, sagittal) recomputed after each of 200 crosshair moves
  (target <= 20);
- vr_first_frame_s: scene creation and the first full-quality frame at 512x512 (--preset, default CT soft tissue,
  where rays cross the whole body) (target <= 1.5);
- vr_fps: frames per second over 36 rotation steps of 10 degrees with the interaction level of detail on
  (target >= 8 on CPU), and vr_still_frame_s, the full-quality frame after the rotation;
- mpr_oblique_update_ms_p50 / mpr_oblique_interactive_ms_p50: the same after turning the coronal and sagittal
  planes 30 degrees about the axial direction (oblique MPR, trilinear resampling of two planes) at full
  resolution and at the level of detail used while the mouse moves (no target in the issue; the 20 ms of the
  straight planes is the yardstick), and mpr_oblique_axial_scroll_ms_p50, scrolling the axial plane while the
  others are turned (their images are reused: the crosshair moves within them);
- mem_ratio: resident memory added by volume + 3D scene + MPR planes over the raw voxel bytes (target <= 2);
- mapper, renderer: what VTK drew with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ct_phantom(slices: int, size: int):
    from viewer.dicom.volume import Volume, VolumeGeometry

    data = np.full((slices, size, size), -1000, dtype=np.int16)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    body = ((xx - c) / (0.42 * size)) ** 2 + ((yy - c) / (0.32 * size)) ** 2 <= 1
    lung_l = ((xx - c + 0.18 * size) / (0.12 * size)) ** 2 + ((yy - c + 0.03 * size) / (0.16 * size)) ** 2 <= 1
    lung_r = ((xx - c - 0.18 * size) / (0.12 * size)) ** 2 + ((yy - c + 0.03 * size) / (0.16 * size)) ** 2 <= 1
    spine = ((xx - c) / (0.05 * size)) ** 2 + ((yy - c - 0.2 * size) / (0.05 * size)) ** 2 <= 1
    ring = np.hypot((xx - c) / (0.40 * size), (yy - c) / (0.30 * size))
    ribs = (ring > 0.90) & (ring < 0.96)
    rng = np.random.default_rng(1)
    for k in range(slices):
        s = data[k]
        s[body] = 40
        s[lung_l | lung_r] = -850
        s[spine] = 700 + (k % 20) * 10
        if k % 25 < 8:  # a rib every 25 mm
            s[ribs] = 600
        s += rng.integers(-20, 20, size=s.shape, dtype=np.int16)
    geometry = VolumeGeometry(shape=data.shape, origin=(-size * 0.35, -size * 0.35, 0.0),
                              row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0), normal=(0.0, 0.0, 1.0),
                              spacing=(1.0, 0.7, 0.7))
    return Volume(data, geometry, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--mapper", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--preset", default="CT soft tissue", help="(default: %(default)s, the densest)")
    parser.add_argument("--shading", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()

    from viewer.dicom.mpr import INTERACTIVE_PIXELS_MAX, OBLIQUE_PIXELS_MAX, Mpr
    from viewer.ui.render3d import VolumeScene

    before = rss_bytes()
    volume = ct_phantom(args.slices, args.size)
    raw = volume.data.nbytes
    mpr = Mpr(volume)
    rng = np.random.default_rng(7)
    g = volume.geometry
    times = []
    for _ in range(200):
        target = g.to_patient([rng.uniform(0, n - 1) for n in g.shape])
        started = time.perf_counter()
        mpr.set_crosshair(target)
        planes = mpr.planes()
        times.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    shading = None if args.shading == "auto" else args.shading == "on"
    scene = VolumeScene(volume, size=(512, 512), mapper=args.mapper, shading=shading)
    scene.set_preset(args.preset)
    scene.render()
    first = time.perf_counter() - started
    scene.set_interacting(True)
    started = time.perf_counter()
    steps = 36
    for _ in range(steps):
        scene.rotate(10)
        scene.render()
    fps = steps / (time.perf_counter() - started)
    scene.set_interacting(False)
    started = time.perf_counter()
    scene.render()
    still = time.perf_counter() - started
    frame = scene.frame()
    after = rss_bytes()
    mpr.rotate("axial", 30.0)
    oblique = {"full": [], "interactive": []}
    for _ in range(30):
        target = g.to_patient([rng.uniform(0, n - 1) for n in g.shape])
        mpr.set_crosshair(target)
        for kind, pixels in (("full", OBLIQUE_PIXELS_MAX), ("interactive", INTERACTIVE_PIXELS_MAX)):
            started = time.perf_counter()
            mpr.planes(pixels_max=pixels)
            oblique[kind].append((time.perf_counter() - started) * 1000)
    for _ in range(30):  # scrolling the axial plane: the turned planes contain its normal, so they are reused
        started = time.perf_counter()
        mpr.scroll("axial", 1)
        mpr.planes()
        oblique.setdefault("scroll", []).append((time.perf_counter() - started) * 1000)
    mpr.reset_rotation()
    info = scene.window.ReportCapabilities() or ""
    renderer = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                     if "renderer string" in line.lower()), "?")
    print(json.dumps({
        "benchmark": "render3d", "shape": list(volume.data.shape), "voxel_mb": round(raw / 2**20, 1),
        "mpr_update_ms_p50": round(statistics.median(times), 2), "mpr_update_ms_p95": round(
            sorted(times)[int(len(times) * 0.95)], 2), "mpr_plane_shapes": {k: list(v.data.shape) for k, v in planes.items()},
        "mpr_oblique_update_ms_p50": round(statistics.median(oblique["full"]), 1),
        "mpr_oblique_interactive_ms_p50": round(statistics.median(oblique["interactive"]), 1),
        "mpr_oblique_axial_scroll_ms_p50": round(statistics.median(oblique["scroll"]), 1),
        "vr_first_frame_s": round(first, 3), "vr_fps": round(fps, 2), "vr_still_frame_s": round(still, 3),
        "frame_nonblack": round(float((frame.sum(axis=2) > 0).mean()), 3),
        "mem_ratio": round((after - before) / raw, 2), "mapper": scene.mapper_kind, "renderer": renderer,
        "preset": args.preset, "shading": scene.shading,
    }))


if __name__ == "__main__":
    main()
