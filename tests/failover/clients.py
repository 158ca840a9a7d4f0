"""The client side of a fault test: a process started in the lab's LAN namespace (a `mifas-pacs` command or a
workload module) that the test watches, strikes a fault under, then collects; killed at the end if it still runs,
whatever the test's outcome."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def client_process(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """`cmd` running with its output captured (text); killed and reaped on the way out if it has not ended."""
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def json_results(process: subprocess.Popen, timeout_s: float) -> dict:
    """What a workload module printed (one JSON object) once it ended well; its stderr when it did not."""
    out, err = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, err
    return json.loads(out)


def workload_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line every client workload takes: its profiles file, a work folder, the status file it writes
    and the file whose appearance says go."""
    parser = argparse.ArgumentParser()
    for option in ("--profiles", "--work", "--status", "--go"):
        parser.add_argument(option, required=True)
    return parser.parse_args(argv)
