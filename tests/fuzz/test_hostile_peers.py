"""Hostile peers against the lean C-FIND / C-GET (a raw-socket DIMSE peer) and the DICOMweb client (an HTTP server
with hostile answers), the client in a watched worker: a crash, a hang (> 10 s), resident memory above 1 GiB, or
any outcome other than an answer or a MifasError with a sentence fails the test, naming the case."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.fuzz import peers
from tests.fuzz.harness import budget_s, run_cases, seed

pytestmark = [pytest.mark.fuzz, pytest.mark.network, pytest.mark.slow, pytest.mark.timeout(900)]

SHARE = 0.25  # each, of the fuzz budget (the hostile files have half)

# Bugs this generator found in files other engineers own (issue 12), reported to the lead; each must still fail
# as described (so that a fix shows up here and the entry is removed), and nothing else may.
KNOWN: dict[str, str] = {}  # case names of failures known and not fixed yet, with where the fix belongs


def check(report) -> None:  # type: ignore[no-untyped-def]
    print(report.summary())
    unexpected = [o for o in report.failures if o.name not in KNOWN]
    still = {o.name for o in report.failures if o.name in KNOWN}
    for name in still:
        print(f"known: {name}: {KNOWN[name]}")
    assert not unexpected, f"{report.summary()}\n{report.failure_text()}"
    ran = {o.name for o in report.outcomes}
    fixed = [name for name in KNOWN if name in ran and name not in still]
    assert not fixed, f"fixed now, remove from KNOWN: {fixed}"


def test_hostile_dimse_peers(tmp_path: Path) -> None:
    report = run_cases(itertools.chain(peers.dimse_cases(peers.dimse_catalogue()), peers.scp_cases()),
                       lambda rng: peers.dimse_cases(peers.dimse_random(rng), ("find",)),
                       budget=budget_s() * SHARE, log=tmp_path / "worker.log", rng_seed=seed())
    check(report)


def test_hostile_dicomweb_servers(tmp_path: Path) -> None:
    server = peers.WebServer()
    try:
        report = run_cases(peers.web_cases(server, list(peers.WEB_ANSWERS)),
                           lambda rng: peers.web_random(server, rng),
                           budget=budget_s() * SHARE, log=tmp_path / "worker.log", rng_seed=seed())
    finally:
        server.close()
    check(report)
