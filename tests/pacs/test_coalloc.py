"""Co-allocation (viewer.pacs.coalloc through the retrieval engine) against two real Orthanc replicas of one
study, each in its own network namespace behind a tbf-shaped link (60 and 100 Mbit/s: mifaslab.netns.shaped).

What is asserted: every instance arrives byte-identical and is held exactly once (the redundant copies of the tail
are dropped, never stored twice), both sources served, the shares add up; with one replica killed in the middle of
the transfer, the retrieval completes from the other and the event log says the source was dropped.  A DICOMweb
replica beside a DIMSE one works the same.  Throughputs are never asserted (benchmarks/retrieve.py measures them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mifaslab.netns.shaped import ShapedReplicas
from tests.pacs.conftest import CALLING_AE, ct_series, part10
from tests.pacs.test_shaped_bed import require_bed
from tests.support import dataset_sha256, network_namespace
from viewer.library import Library
from viewer.pacs.cluster import ClusterAddress, ClusterProfile
from viewer.pacs.health import EventLog
from viewer.pacs.node import Timeouts
from viewer.pacs.retrieve import retrieve
from viewer.pacs.retry import RetryPolicy, SourceDropped

pytestmark = [pytest.mark.network, pytest.mark.slow]

PREFIX = "mifascaco"
INSTANCES = 80  # 80 x 256 x 256 x 16 bit: about 10.5 MB, about a second through both links
KILL_AFTER = 20
TIMEOUTS = Timeouts(connect_s=1.0, acse_s=3.0, dimse_s=5.0, network_s=10.0)


@pytest.fixture(scope="module")
def study() -> tuple[str, dict[str, bytes]]:
    datasets = ct_series(INSTANCES, rows=256, columns=256, seed=51, patient_id="MIFAS-CO")
    return str(datasets[0].StudyInstanceUID), {str(ds.SOPInstanceUID): part10(ds) for ds in datasets}


@pytest.fixture
def bed(tmp_path: Path, study: tuple[str, dict[str, bytes]]) -> Iterator[ShapedReplicas]:
    require_bed()
    with ShapedReplicas(tmp_path / "bed", rates_mbit=(60, 100), prefix=PREFIX) as replicas:
        replicas.upload(list(study[1].values()))
        yield replicas


def profile(bed: ShapedReplicas, methods: tuple[str, str]) -> ClusterProfile:
    """The two replicas as sources (replica a also answers the planning queries), each with its method."""
    addresses = tuple(ClusterAddress(r.host, r.dicom_port, name=r.name, ae_title=r.aet, dicomweb_url=r.dicomweb_url,
                                     via=method) for r, method in zip(bed.replicas, methods, strict=True))
    return ClusterProfile(name="replicas", vip=addresses[0], members=addresses[1:], ae_title=bed.replicas[0].aet,
                          calling_ae=CALLING_AE, transports=("dimse", "dicomweb"), timeouts=TIMEOUTS,
                          retry=RetryPolicy(budget_s=10), replicas=addresses)


def assert_exactly(library: Library, source: dict[str, bytes]) -> None:
    records = list(library.iter_instances())
    assert sorted(r.sop_instance_uid for r in records) == sorted(source)  # each once: no duplicate, none missing
    for record in records:
        assert dataset_sha256(record.path.read_bytes()) == dataset_sha256(source[record.sop_instance_uid])
    assert len(list((library.root / "objects").glob("*/*.dcm"))) == len(source)
    assert library.fsck() == {"orphans_removed": 0, "missing": 0} and library.partial_files() == []


@pytest.mark.parametrize("methods", [("get", "get"), ("get", "wado")])
def test_two_shaped_replicas_serve_one_study(bed: ShapedReplicas, study: tuple[str, dict[str, bytes]],
                                             tmp_path: Path, methods: tuple[str, str]) -> None:
    study_uid, source = study
    log = EventLog()
    with Library.open(tmp_path / "library") as library, network_namespace(bed.lan):
        outcome = retrieve(profile(bed, methods), study_uid, library=library, on_event=log.record)
        assert outcome.complete, outcome.describe()
        assert_exactly(library, source)
    shares = {s.name: s.instances for s in outcome.sources}
    print(f"\n{methods}: {outcome.describe()} ({outcome.result.seconds:.2f} s)")
    assert set(shares) == {r.name for r in bed.replicas}
    assert all(count > 0 for count in shares.values()) and sum(shares.values()) == INSTANCES
    assert "served by" in outcome.describe()
    assert any(t.startswith("Co-allocated retrieval done") for t in (e.text for e in log.entries()))


def test_a_replica_killed_mid_transfer_leaves_the_rest_to_the_other(bed: ShapedReplicas,
                                                                   study: tuple[str, dict[str, bytes]],
                                                                   tmp_path: Path) -> None:
    study_uid, source = study
    events: list[object] = []
    log = EventLog()
    killed = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= KILL_AFTER and not killed.is_set():
            killed.set()
            threading.Thread(target=bed.kill, args=(0,), daemon=True).start()

    with Library.open(tmp_path / "library") as library, network_namespace(bed.lan):
        outcome = retrieve(profile(bed, ("get", "get")), study_uid, library=library, progress=progress,
                           on_event=lambda e: (events.append(e), log.record(e)))
        assert killed.is_set(), "the retrieval ended before the kill: the test would prove nothing"
        assert outcome.complete, outcome.describe()
        assert_exactly(library, source)
    dropped = [e for e in events if isinstance(e, SourceDropped)]
    assert [e.node for e in dropped] == [bed.replicas[0].name]
    shares = {s.name: s for s in outcome.sources}
    assert shares[bed.replicas[0].name].dropped and not shares[bed.replicas[1].name].dropped
    assert any("was dropped; the other sources take over its share" in e.text for e in log.entries())
