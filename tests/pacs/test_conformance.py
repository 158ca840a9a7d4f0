"""Two conformance classes against the same real Orthanc: the transports (C-GET, C-MOVE, WADO-RS) as the
engine uses them, and the retrieval engine over every transport and both entry points (a plain node, which is a
cluster of one, and a cluster profile).

Received instances are compared with what was uploaded: the whole data set (pydicom equality, so every
attribute) and the Pixel Data bytes, which also proves that compressed instances arrive as stored (no
transcoding).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pydicom
import pytest

from tests.pacs.conftest import Seed
from viewer.errors import (
    DicomWebError,
    MalformedDicomError,
    OperationCancelled,
    PacsStatusError,
    StorageFullError,
)
from viewer.library import Library
from viewer.pacs import PacsClient, keep_patient_data_out_of_logs, open_client
from viewer.pacs.cluster import ClusterAddress, ClusterProfile
from viewer.pacs.node import Node
from viewer.pacs.retrieve import first_middle_last, retrieve

pytestmark = pytest.mark.network


# Encoding details a DCMTK-based sender (Orthanc) may change without changing content: it drops group lengths
# (gggg,0000) and Data Set Trailing Padding, and writes encapsulated Pixel Data as OB (PS3.5 A.4).
_TRAILING_PADDING = 0xFFFCFFFC


def _content(ds: pydicom.Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != _TRAILING_PADDING}


def assert_same_instance(received: bytes, source: bytes) -> None:
    got = pydicom.dcmread(io.BytesIO(received))
    want = pydicom.dcmread(io.BytesIO(source))
    assert got.SOPInstanceUID == want.SOPInstanceUID
    assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID, "the peer transcoded"
    assert got.PixelData == want.PixelData
    for keyword in ("PatientName", "PatientID", "StudyDate", "Modality", "Rows", "Columns", "InstanceNumber"):
        assert got.get(keyword) == want.get(keyword), keyword
    assert _content(got) == _content(want)  # every other data element too


class Collector:
    """A sink that keeps what it receives, in arrival order (thread-safe: C-MOVE and lanes call it from
    other threads)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self._lock:
            self.items.append(data)

    def uids(self) -> list[str]:
        return [self.uid_of(d) for d in self.items]

    @staticmethod
    def uid_of(data: bytes) -> str:
        return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(params=["get", "move", "wado"])
def via(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def client(node: Node, via: str, move_port: int) -> Iterator[PacsClient]:
    pacs = open_client(node, via, move_port=move_port)
    yield pacs
    pacs.close()


class TestTransportConformance:
    """What every PacsClient must do, whatever carries it."""

    def test_echo(self, client: PacsClient) -> None:
        assert client.echo() >= 0

    def test_find_studies_with_wildcard(self, client: PacsClient, seed_data: Seed) -> None:
        # "Test*", not "Test^Phan*": Orthanc's DICOMweb plugin 1.7 matches no name containing "^" over QIDO-RS.
        rows = client.find("study", {"PatientName": "Test*"})
        assert [r["StudyInstanceUID"] for r in rows] == [seed_data.ct_study]
        row = rows[0]
        assert row["PatientName"] == "Test^Phantom"
        assert row["PatientID"] == "MIFAS-T1"
        assert row["StudyDate"] == "20240315"
        assert row["AccessionNumber"] == "ACC0001"
        assert row["ModalitiesInStudy"] == "CT"
        assert row["StudyDescription"] == "MIFAS test CT"
        assert row["NumberOfStudyRelatedInstances"] == "31"

    def test_find_studies_by_date_range(self, client: PacsClient, seed_data: Seed) -> None:
        in_2023 = {r["StudyInstanceUID"] for r in client.find("study", {"StudyDate": "20230101-20231231"})}
        assert in_2023 == {seed_data.two_series_study}
        since_2024 = {r["StudyInstanceUID"] for r in client.find("study", {"StudyDate": "20240101-"})}
        assert seed_data.ct_study in since_2024 and seed_data.two_series_study not in since_2024
        everything = {r["StudyInstanceUID"] for r in client.find("study", {})}
        assert everything == seed_data.study_uids()

    def test_find_series_and_images(self, client: PacsClient, seed_data: Seed) -> None:
        series = client.find("series", {"StudyInstanceUID": seed_data.two_series_study})
        assert {r["SeriesInstanceUID"] for r in series} == set(seed_data.two_series)
        assert {r["SeriesNumber"] for r in series} == {"1", "2"}
        assert all(r["Modality"] == "CT" and r["NumberOfSeriesRelatedInstances"] == "5" for r in series)
        images = client.find("image", {"StudyInstanceUID": seed_data.ct_study, "SeriesInstanceUID": seed_data.ct_series})
        assert {r["SOPInstanceUID"] for r in images} == seed_data.instances_of(seed_data.ct_study)
        assert sorted(int(r["InstanceNumber"]) for r in images) == list(range(1, 32))

    def test_find_limit(self, client: PacsClient, seed_data: Seed) -> None:
        images = client.find("image", {"StudyInstanceUID": seed_data.ct_study, "SeriesInstanceUID": seed_data.ct_series},
                             limit=4)
        assert len(images) == 4

    def test_retrieve_study(self, client: PacsClient, seed_data: Seed) -> None:
        sink = Collector()
        result = client.retrieve(seed_data.two_series_study, sink=sink)
        wanted = seed_data.instances_of(seed_data.two_series_study)
        assert sorted(sink.uids()) == sorted(wanted)
        assert result.completed == 10 and result.failed == 0
        assert sorted(result.sop_instance_uids) == sorted(wanted)
        assert result.bytes == sum(len(d) for d in sink.items)
        for data in sink.items:
            assert_same_instance(data, seed_data.files[pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID])

    def test_retrieve_series(self, client: PacsClient, seed_data: Seed) -> None:
        sink = Collector()
        client.retrieve(seed_data.two_series_study, seed_data.two_series[1], sink=sink)
        assert len(sink.items) == 5
        assert {pydicom.dcmread(io.BytesIO(d)).SeriesInstanceUID for d in sink.items} == {seed_data.two_series[1]}

    def test_retrieve_listed_instances(self, client: PacsClient, seed_data: Seed) -> None:
        images = client.find("image", {"StudyInstanceUID": seed_data.ct_study, "SeriesInstanceUID": seed_data.ct_series})
        wanted = sorted(r["SOPInstanceUID"] for r in images)[:3]
        sink = Collector()
        progress: list[tuple[int, int | None]] = []
        result = client.retrieve(seed_data.ct_study, seed_data.ct_series, wanted, sink=sink,
                                 progress=lambda done, total: progress.append((done, total)))
        assert sorted(sink.uids()) == wanted
        assert result.completed == 3
        assert progress[-1] == (3, 3)

    def test_sink_refusing_one_instance_fails_only_that_one(self, client: PacsClient, via: str,
                                                            seed_data: Seed) -> None:
        sink = Collector()
        calls = []

        def picky(data: bytes) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise MalformedDicomError("this one is damaged")
            sink(data)

        if via == "move":
            # Orthanc (unlike its C-GET) ends a C-MOVE with a failure (0xC000) at the first sub-operation
            # the destination refuses, so the refusal reaches the caller as the PACS's failure.
            with pytest.raises(PacsStatusError, match="C-MOVE"):
                client.retrieve(seed_data.two_series_study, seed_data.two_series[0], sink=picky)
            assert len(sink.items) == 1
            return
        result = client.retrieve(seed_data.two_series_study, seed_data.two_series[0], sink=picky)
        assert len(sink.items) == 4
        assert result.completed == 4 and result.failed == 1

    def test_full_disk_stops_the_retrieval(self, client: PacsClient, seed_data: Seed) -> None:
        sink = Collector()

        def filling(data: bytes) -> None:
            if len(sink.items) == 3:
                raise StorageFullError("The disk holding the library is full.")
            sink(data)

        with pytest.raises(StorageFullError):
            client.retrieve(seed_data.ct_study, seed_data.ct_series, sink=filling)
        assert len(sink.items) == 3


@pytest.fixture(params=["node", "cluster"])
def entry(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def source(node: Node, via: str, move_port: int, entry: str) -> ClusterProfile:
    """What the engine retrieves from: the node as a cluster of one, or a cluster profile whose virtual IP and
    member are this Orthanc (the method pinned to `via`)."""
    if entry == "node":
        return ClusterProfile.of_node(node, via, move_port=move_port)
    vip = ClusterAddress(node.host, node.port, name="virtual IP", dicomweb_url=node.dicomweb_url)
    member = ClusterAddress(node.host, node.port, name="node A", dicomweb_url=node.dicomweb_url)
    return ClusterProfile(name="conformance", vip=vip, members=(member,), ae_title=node.ae_title,
                          calling_ae=node.calling_ae, transports=("dimse", "dicomweb"), preferred=via, fallbacks=(),
                          timeouts=node.timeouts, move_port=move_port)


class TestEngineConformance:
    """What the retrieval engine does over every transport, from a node or a cluster alike."""

    def test_every_compressed_file_arrives_as_stored(self, source: ClusterProfile, tmp_path, seed_data: Seed) -> None:
        with Library.open(tmp_path / "lib") as library:
            for study_uid in sorted(set(seed_data.pydicom_studies.values())):
                assert retrieve(source, study_uid, library=library).complete
            held = {r.sop_instance_uid: r for r in library.iter_instances()}
            for name, study_uid in seed_data.pydicom_studies.items():
                for uid in seed_data.instances_of(study_uid):
                    assert uid in held, name
                    assert_same_instance(held[uid].path.read_bytes(), seed_data.files[uid])

    def test_first_middle_last_first(self, source: ClusterProfile, tmp_path, seed_data: Seed) -> None:
        arrival: list[str] = []
        with Library.open(tmp_path / "lib") as library:
            def sink(data: bytes) -> None:
                arrival.append(library.store_bytes(data).sop_instance_uid)

            progress: list[tuple[int, int | None]] = []
            outcome = retrieve(source, seed_data.ct_study, sink=sink, held=library.has_instance,
                               progress=lambda d, t: progress.append((d, t)))
            ordered = [u for _, u in sorted((int(pydicom.dcmread(library.path_of(u)).InstanceNumber), u)
                                            for u in arrival)]
            assert set(arrival[:3]) == {ordered[i] for i in first_middle_last(31)}
            assert outcome.complete and outcome.result.completed == 31 and outcome.result.skipped_already_held == 0
            assert progress[-1] == (31, 31)
            for record in library.instances(seed_data.ct_series):
                assert_same_instance(record.path.read_bytes(), seed_data.files[record.sop_instance_uid])

            # A second retrieval asks for nothing: everything is held.
            again = retrieve(source, seed_data.ct_study, library=library)
            assert again.complete and again.result.completed == 0 and again.result.skipped_already_held == 31

    def test_resume_fetches_only_what_is_missing(self, source: ClusterProfile, tmp_path, seed_data: Seed) -> None:
        with Library.open(tmp_path / "lib") as library:
            first, second = seed_data.two_series
            for uid in seed_data.instances_of(seed_data.two_series_study):
                data = seed_data.files[uid]
                if pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID == first:
                    library.store_bytes(data)
            outcome = retrieve(source, seed_data.two_series_study, library=library)
            assert outcome.result.skipped_already_held == 5 and outcome.result.completed == 5
            assert outcome.complete and len(library.instance_uids(second)) == 5

    def test_cancel_keeps_what_was_stored_and_the_next_run_completes(self, source: ClusterProfile, tmp_path,
                                                                     seed_data: Seed) -> None:
        cancel = threading.Event()
        with Library.open(tmp_path / "lib") as library:
            stored: list[str] = []

            def sink(data: bytes) -> None:
                stored.append(library.store_bytes(data).sop_instance_uid)
                if len(stored) == 5:
                    cancel.set()

            with pytest.raises(OperationCancelled):
                retrieve(source, seed_data.ct_study, sink=sink, held=library.has_instance, cancel=cancel)
            held = {r.sop_instance_uid for r in library.instances(seed_data.ct_series)}
            assert set(stored) == held
            assert 5 <= len(held) < 31
            outcome = retrieve(source, seed_data.ct_study, library=library)
            assert outcome.complete and outcome.result.skipped_already_held == len(held)
            assert library.instance_uids(seed_data.ct_series) == seed_data.instances_of(seed_data.ct_study)


def test_qido_has_no_patient_level(node: Node) -> None:
    client = open_client(node, "wado")
    with pytest.raises(DicomWebError, match="patient"):
        client.find("patient", {})


def test_dimse_patient_level_find(node: Node) -> None:
    rows = open_client(node, "get").find("patient", {"PatientID": "MIFAS-T*"})
    assert {r["PatientID"] for r in rows} == {"MIFAS-T1", "MIFAS-T2"}
    assert {r["PatientName"] for r in rows} == {"Test^Phantom", "Other^Person"}


def test_no_patient_data_in_logs(node: Node, seed_data: Seed, move_port: int, tmp_path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    keep_patient_data_out_of_logs()  # what mifas-pacs and mifas-viewer do at start
    with caplog.at_level(logging.DEBUG):
        client = open_client(node, "move", move_port=move_port)  # pynetdicom's path logs every PDU at DEBUG
        try:
            assert client.find("study", {"PatientName": "Test*"})
            client.retrieve(seed_data.ct_study, seed_data.ct_series, sink=lambda data: None)
        finally:
            client.close()
        with Library.open(tmp_path / "lib") as library:
            assert retrieve(ClusterProfile.of_node(node, "get"), seed_data.ct_study, library=library).complete
    assert caplog.records, "nothing was logged at all: the test would prove nothing"
    for secret in ("Test^Phantom", "MIFAS-T1", "ACC0001"):
        assert secret not in caplog.text
