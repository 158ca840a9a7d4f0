"""The Debian package: build time, size, install time into a clean Debian 12 root (issue 6).

    python benchmarks/install.py [--cold]

Runs the install test (tests/install, as root: it builds the .deb, installs it with apt into a fresh
debootstrapped Debian 12 root, uses it and purges it) and prints its measurements as one JSON line:

- package_bytes, package_mib, installed_kib, compression   the .deb (dpkg-deb -Zzstd -z3)
- build_s            packaging/deb/build_deb.py from this checkout (venv, pip install, strip, dpkg-deb)
- base_build_s       debootstrap of the base root; 0 when it came from ~/.cache/mifas-install (--cold: a fresh
                     cache folder, so the figure is a first CI run's)
- unpack_base_s      unpacking the 200 MiB base root: the reference, measured in the same run
- install_s          ``apt-get install ./mifas-viewer.deb`` in the root: download and install of the Depends,
                     unpack, postinst byte-compilation; ratio_install_vs_unpack_base = install_s / unpack_base_s
- dependencies_download, packages_installed   what apt fetched for the Depends
- upgrade_s, purge_s, echo_s, screenshot_s     the other steps
- test_s             the whole module, build included: what CI spends on it
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="build the base root from scratch (empty cache)")
    args = parser.parse_args()
    env = dict(os.environ, TCP_NODELAY="1")
    with tempfile.TemporaryDirectory(prefix="mifas-install-cache-") as cache:
        if args.cold:
            env["MIFAS_INSTALL_CACHE"] = cache
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "tests/install"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], file=sys.stderr)
        return 1
    measured = json.loads((ROOT / "build/install-test.json").read_text())
    if measured.get("unpack_base_s"):
        measured["ratio_install_vs_unpack_base"] = round(measured["install_s"] / measured["unpack_base_s"], 1)
    print(json.dumps(measured, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
