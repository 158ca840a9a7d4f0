"""Listed retrievals split over parallel associations (lanes) and over several requests per association,
against the real Orthanc.  The limits are lowered so that the 31-slice test series exercises both paths."""

from __future__ import annotations

import threading

import pytest

from tests.pacs.conftest import Seed
from tests.pacs.test_conformance import Collector, assert_same_instance
from viewer.errors import OperationCancelled, StorageFullError
from viewer.pacs import DimseClient, dimse, query
from viewer.pacs.node import Node

pytestmark = pytest.mark.network


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dimse, "LANE_INSTANCES_MIN", 4)  # 31 instances -> up to 7 lanes
    monkeypatch.setattr(query, "SOP_UIDS_PER_REQUEST_MAX", 3)  # several C-GET/C-MOVE requests per lane


def listed(client: DimseClient, seed: Seed) -> list[str]:
    rows = client.find("image", {"StudyInstanceUID": seed.ct_study, "SeriesInstanceUID": seed.ct_series})
    return sorted(r["SOPInstanceUID"] for r in rows)


@pytest.mark.parametrize("via", ["get", "move"])
def test_lanes_fetch_each_instance_once(small_limits: None, node: Node, seed_data: Seed, via: str,
                                        move_port: int) -> None:
    with DimseClient(node, via=via, associations=3, storage_port=move_port) as client:
        uids = listed(client, seed_data)
        sink = Collector()
        progress: list[tuple[int, int | None]] = []
        result = client.retrieve(seed_data.ct_study, seed_data.ct_series, uids, sink=sink,
                                 progress=lambda d, t: progress.append((d, t)))
    assert sorted(sink.uids()) == uids  # every one, none twice
    assert result.completed == 31 and result.failed == 0 and sorted(result.sop_instance_uids) == uids
    assert sorted(d for d, _ in progress) == list(range(1, 32)) and {t for _, t in progress} == {31}
    for data in sink.items:
        assert_same_instance(data, seed_data.files[Collector.uid_of(data)])


def test_cancel_stops_every_lane(small_limits: None, node: Node, seed_data: Seed) -> None:
    cancel = threading.Event()
    sink = Collector()

    def cancelling(data: bytes) -> None:
        sink(data)
        if len(sink.items) >= 4:
            cancel.set()

    with DimseClient(node, associations=3) as client:
        uids = listed(client, seed_data)
        with pytest.raises(OperationCancelled):
            client.get(seed_data.ct_study, seed_data.ct_series, uids, sink=cancelling, cancel=cancel)
    assert 4 <= len(sink.items) < 31


def test_one_lane_failing_stops_the_others_with_its_error(small_limits: None, node: Node, seed_data: Seed) -> None:
    sink = Collector()
    lock = threading.Lock()

    def filling(data: bytes) -> None:  # lanes call it concurrently
        with lock:
            if len(sink.items) >= 5:
                raise StorageFullError("The disk holding the library is full.")
            sink(data)

    with DimseClient(node, associations=3) as client:
        uids = listed(client, seed_data)
        with pytest.raises(StorageFullError):
            client.get(seed_data.ct_study, seed_data.ct_series, uids, sink=filling)
    assert len(sink.items) == 5
