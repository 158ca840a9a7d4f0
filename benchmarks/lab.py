"""The cluster-in-VMs lab's own figures (issue 4): build, up, takeover, resync, failback.

    python benchmarks/lab.py [--cold] [--instances 200]

Runs ``mifas-lab build`` (with --cold after emptying the image cache, so the build is measured from nothing),
``up``, ``drill --json`` and ``down``, each through the real command, and prints one JSON line: build_s, up_s,
accel, and the drill's acknowledged, lost, corrupted, takeover_s, resync_s, failback_s, second_takeover_s,
client_get_ok, store_s, drill_s.  Root, qemu, debootstrap; minutes (TCG: 10-15).  There is no reference to
measure against in the same run: these are the lab's absolute times, on software-emulated CPUs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "packaging" / "lab" / "mifas-lab"
sys.path.insert(0, str(ROOT / "packaging" / "lab"))


def lab(*args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 and args[0] != "drill":
        raise SystemExit(f"lab.py: mifas-lab {' '.join(args)} failed:\n{result.stderr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty the image cache first")
    parser.add_argument("--instances", type=int, default=200)
    args = parser.parse_args()
    from mifaslab import config

    lab("down")
    if args.cold:
        shutil.rmtree(config.cache_dir(), ignore_errors=True)
    figures: dict[str, object] = {"cold": args.cold}
    started = time.monotonic()
    built = json.loads(lab("build").stdout)
    figures["build_s"] = built["build_s"] if args.cold else round(time.monotonic() - started, 1)
    try:
        up = json.loads(lab("up").stdout)
        figures.update(up_s=up["up_s"], accel=up["accel"])
        drilled = lab("drill", "--json", "--instances", str(args.instances))
        drill = json.loads(drilled.stdout)
        for key in ("acknowledged", "lost", "corrupted", "takeover_s", "resync_s", "failback_s",
                    "second_takeover_s", "client_get_ok", "store_s", "drill_s", "recover_boot_s"):
            figures[key] = drill.get(key)
    finally:
        lab("down")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
