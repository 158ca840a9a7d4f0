"""The parent side of the hostile-input suite: runs cases in a worker process (tests.fuzz.worker) under a watchdog.

Every case either ends with the worker's answer (verdict ``ok`` or ``bad``), or it is a failure of its own kind:

``hang``    no answer within :data:`HANG_S` (issue 12's definition of a hang); the worker is killed
``memory``  the worker's resident memory passed :data:`RSS_MAX_MIB` (it is watched while the case runs, and its
            peak is measured per case); the worker is killed
``crash``   the worker died (a segfault, an abort, an exit)

After a killed or dead worker, a fresh one runs the next case.  The seed and the budget come from the environment
(:data:`SEED_ENV`, :data:`BUDGET_ENV`): every catalogued case always runs; seeded random mutations follow for as
long as the budget lasts.
"""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 10.0
RSS_MAX_MIB = 1024.0
SEED_ENV, BUDGET_ENV = "MIFAS_FUZZ_SEED", "MIFAS_FUZZ_BUDGET_S"
DEFAULT_SEED, DEFAULT_BUDGET_S = 20261207, 60.0
WATCH_EVERY_S = 0.05  # how often the watchdog looks at the worker's memory while a case runs
START_S = 60.0  # a worker's start (imports) on a loaded machine


def seed() -> int:
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


def budget_s() -> float:
    return float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_S))


@dataclass
class Case:
    """One hostile input: `prepare` gives the worker's request (it may start a peer), `close` ends what it started."""

    name: str
    prepare: Callable[[], dict]
    close: Callable[[], None] = lambda: None


@dataclass
class Outcome:
    name: str
    verdict: str  # ok, bad, hang, memory, crash
    detail: object
    peak_rss_mib: float
    seconds: float


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict != "ok"]

    def summary(self) -> str:
        peak = max((o.peak_rss_mib for o in self.outcomes), default=0.0)
        slowest = max(self.outcomes, key=lambda o: o.seconds, default=None)
        return (f"{len(self.outcomes)} cases in {self.seconds:.1f} s, {len(self.failures)} failed; peak RSS of the "
                f"worker {peak:.0f} MiB; slowest case {slowest.name if slowest else '-'} "
                f"({slowest.seconds if slowest else 0:.1f} s)")

    def failure_text(self) -> str:
        return "\n".join(f"{o.verdict.upper()} {o.name}: {o.detail}" for o in self.failures)


def _rss_mib(pid: int, key: str = "VmRSS:") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


class Worker:
    def __init__(self, log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
                                     env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.lines.get(timeout=START_S)
        if ready is None or not json.loads(ready).get("ready"):
            raise RuntimeError(f"the fuzz worker did not start: {self.stderr_tail()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def stderr_tail(self) -> str:
        self._log.flush()
        try:
            return Path(self._log.name).read_bytes()[-1500:].decode(errors="replace")
        except OSError:
            return ""

    def run(self, request: dict) -> Outcome:
        name = request["name"]
        started = time.monotonic()
        peak = 0.0
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return Outcome(name, "crash", f"the worker was gone: {self.stderr_tail()}", 0.0, 0.0)
        while True:
            try:
                line = self.lines.get(timeout=WATCH_EVERY_S)
            except queue.Empty:
                line = ""
            elapsed = time.monotonic() - started
            if line is None:
                self.proc.wait(timeout=HANG_S)
                return Outcome(name, "crash", f"exit status {self.proc.returncode}: {self.stderr_tail()}", peak,
                               elapsed)
            if line:
                answer = json.loads(line)
                return Outcome(name, answer["verdict"], answer["detail"], answer["peak_rss_mib"], elapsed)
            peak = max(peak, _rss_mib(self.proc.pid))
            if peak > RSS_MAX_MIB:
                self.kill()
                return Outcome(name, "memory", f"resident memory passed {RSS_MAX_MIB:.0f} MiB", peak, elapsed)
            if elapsed > HANG_S:
                self.kill()
                return Outcome(name, "hang", f"no outcome within {HANG_S:.0f} s", peak, elapsed)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


def run_cases(catalogue: Iterable[Case], random_cases: Callable[[random.Random], Iterator[Case]], *,
              budget: float, log: Path, rng_seed: int) -> Report:
    """Every catalogued case, then seeded random ones while the budget lasts; one worker, renewed after a kill."""
    report = Report()
    started = time.monotonic()
    worker: Worker | None = None

    def cases() -> Iterator[Case]:
        yield from catalogue
        for case in random_cases(random.Random(rng_seed)):
            if time.monotonic() - started > budget:
                return
            yield case

    try:
        for case in cases():
            if worker is None or worker.proc.poll() is not None:
                worker = Worker(log)
            try:
                request = {"name": case.name, **case.prepare()}
                outcome = worker.run(request)
            finally:
                case.close()
            report.outcomes.append(outcome)
            if outcome.verdict in ("hang", "memory", "crash"):
                worker = None
    finally:
        if worker is not None:
            worker.close()
    report.seconds = time.monotonic() - started
    return report
