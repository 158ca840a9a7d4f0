"""Write ``packaging/deb/requirements.lock``: every package the installer bundles, pinned, with its hashes.

    python3 packaging/deb/lock.py            # after changing a dependency in pyproject.toml

The .deb's environment is installed from this file with ``pip install --require-hashes`` (build_deb.py), so a
package that changed on the index since the lock was made (a compromised upload, a re-published version) stops the
build instead of entering the package.  The lock is resolved by pip-tools (``pip-compile --generate-hashes``) in a
throw-away virtualenv made by the same Python that builds the package (Debian 12's 3.11), from the runtime
dependencies in pyproject.toml only (no test extras).  ``tests/test_lock.py`` fails when the lock and
pyproject.toml disagree, so nobody forgets to run this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).resolve().with_name("requirements.lock")
SYSTEM_PYTHON = os.environ.get("MIFAS_SYSTEM_PYTHON", "/usr/bin/python3")
PIP_TOOLS = "pip-tools>=7.4"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mifas-lock-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin/python")
        subprocess.run([python, "-m", "pip", "install", "-q", PIP_TOOLS], check=True)
        source = Path(tmp) / "pyproject.toml"
        shutil.copy2(ROOT / "pyproject.toml", source)  # pip-compile reads the dependencies, not the code
        out = Path(tmp) / "requirements.lock"
        subprocess.run([python, "-m", "piptools", "compile", "-q", "--generate-hashes", "--strip-extras",
                        "--allow-unsafe", "--no-header", "--no-emit-index-url", "--no-emit-find-links", "--resolver=backtracking",
                        "-o", str(out), str(source)], check=True, cwd=tmp)
        body = out.read_text(encoding="utf-8").replace(str(source), "pyproject.toml")
        LOCK.write_text("# The installer's bundled environment, pinned with hashes: written by packaging/deb/lock.py "
                        "from pyproject.toml.\n# Do not edit by hand; tests/test_lock.py checks it.\n" + body,
                        encoding="utf-8")
    print(f"wrote {LOCK.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
