"""Reading pictures and movies back with FFmpeg's command-line tools (Debian's ffmpeg package): a reader that
shares no code with the writers under test (PyAV bundles its own FFmpeg build; Pillow is not used here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests.support import require

FFPROBE = "/usr/bin/ffprobe"
FFMPEG = "/usr/bin/ffmpeg"


def need_ffmpeg() -> None:
    require(shutil.which(FFPROBE) is not None and shutil.which(FFMPEG) is not None,
            "Debian's ffmpeg (ffprobe, ffmpeg) is not installed (apt-get install ffmpeg)")


def probe(path: Path, *args: str) -> dict:
    """ffprobe's JSON about ``path`` (``args``: what to show)."""
    out = subprocess.run([FFPROBE, "-v", "error", *args, "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def stream_facts(path: Path) -> dict:
    """The first video stream's facts with the frames counted by decoding (nb_read_frames)."""
    info = probe(path, "-count_frames", "-show_streams", "-show_format")
    return {"stream": info["streams"][0], "format": info["format"]}


def frame_times(path: Path) -> list[float]:
    """Each decoded frame's presentation time in seconds, in presentation order."""
    frames = probe(path, "-show_entries", "frame=best_effort_timestamp_time")["frames"]
    return sorted(float(f["best_effort_timestamp_time"]) for f in frames)


def packet_durations(path: Path) -> list[float]:
    """Each packet's duration in seconds, in presentation order."""
    packets = probe(path, "-show_entries", "packet=pts_time,duration_time")["packets"]
    return [float(p["duration_time"]) for p in sorted(packets, key=lambda p: float(p["pts_time"]))]


def decode(path: Path, pix_fmt: str, rows: int, cols: int, *, frames: int | None = None) -> np.ndarray:
    """Decoded frames as uint8 (n, rows, cols) for "gray" or (n, rows, cols, 3) for "rgb24"; ``frames`` limits
    how many are decoded (from the first).  Every stored frame once: no frame repeated or dropped to make a
    constant rate."""
    limit = ["-frames:v", str(frames)] if frames is not None else []
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), *limit, "-fps_mode", "passthrough",  # each frame once,
                          "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    channels = 3 if pix_fmt == "rgb24" else 1
    data = np.frombuffer(out.stdout, dtype=np.uint8)
    assert data.size % (rows * cols * channels) == 0, "the decoded size is not a whole number of frames"
    shape = (-1, rows, cols, 3) if channels == 3 else (-1, rows, cols)
    return data.reshape(shape)
