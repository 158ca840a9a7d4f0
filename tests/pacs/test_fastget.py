"""The lean C-GET SCU (viewer.pacs.fastget) against real peers: the session's Orthanc (byte-identical output
to the pynetdicom path, every level, a wrong AE title), a pynetdicom C-GET SCP we script (cancel, an abort in
the middle, a refused instance), and raw sockets for a closed port, a silent server and broken PDUs.  The PDU
and command codecs are checked against pynetdicom's own decoders."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dsutils import encode_file_meta as pynetdicom_encode_file_meta
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.presentation import build_context, build_role
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, Seed, ct_series
from tests.pacs.scripted import accept_first_context, hold, read_pdu
from tests.pacs.test_conformance import Collector, assert_same_instance
from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    MalformedDicomError,
    NodeUnreachableError,
    OperationCancelled,
    PacsStatusError,
    PacsTimeoutError,
    StorageFullError,
)
from viewer.library import Library
from viewer.library.writer import GroupWriter
from viewer.pacs import DimseClient, fastget, pdu, query
from viewer.pacs.contexts import get_presentation_contexts
from viewer.pacs.fastget import FastGetClient
from viewer.pacs.node import Node, Timeouts
from viewer.pacs.query import retrieve_identifiers

QUICK = Timeouts(connect_s=1.0, acse_s=1.0, dimse_s=1.0, network_s=2.0)
PATIENT = Timeouts(connect_s=2.0, acse_s=10.0, dimse_s=10.0, network_s=20.0)


def local_node(port: int, ae_title: str = "ANYSCP", timeouts: Timeouts = QUICK) -> Node:
    return Node(name="test", ae_title=ae_title, host="127.0.0.1", port=port, calling_ae=CALLING_AE, timeouts=timeouts)


def by_uid(items: list[bytes]) -> dict[str, bytes]:
    out = {Collector.uid_of(data): data for data in items}
    assert len(out) == len(items), "an instance arrived twice"
    return out


def pynetdicom_get(node: Node, study_uid: str, series_uid: str | None = None, uids: list[str] | None = None,
                   sop_class_uids: set[str] | None = None) -> list[bytes]:
    """The reference: pynetdicom's own C-GET SCU, each instance as ``event.encoded_dataset()`` gives it."""
    received: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.encoded_dataset(include_meta=True))
        return 0x0000

    proposed, scp_classes = get_presentation_contexts(sop_class_uids)
    contexts = [build_context(cx.abstract_syntax, list(cx.transfer_syntaxes)) for cx in proposed]
    roles = [build_role(uid, scp_role=True) for uid in scp_classes]
    ae = AE(ae_title=node.calling_ae)
    assoc = ae.associate(node.host, node.port, contexts=contexts, ae_title=node.ae_title, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        for identifier in retrieve_identifiers(study_uid, series_uid, uids):
            for status, _ in assoc.send_c_get(identifier.to_dataset(), StudyRootQueryRetrieveInformationModelGet):
                assert status
    finally:
        assoc.release()
    return received


def study_of(datasets: list[pydicom.Dataset]) -> str:
    return str(datasets[0].StudyInstanceUID)


def sop_class_of(data: bytes) -> str:
    return str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True).SOPClassUID)


# -- codecs (pure) ---------------------------------------------------------------------------------------------


def test_file_meta_matches_pynetdicom() -> None:
    meta = pydicom.dataset.FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.45"  # odd length: NUL padded
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    want = bytes(128) + b"DICM" + pynetdicom_encode_file_meta(meta)
    got = pdu.encode_file_meta(str(CTImageStorage), "1.2.3.45", ImplicitVRLittleEndian,
                               str(PYNETDICOM_IMPLEMENTATION_UID), PYNETDICOM_IMPLEMENTATION_VERSION)
    assert got == want


def test_our_implementation_is_the_installed_pynetdicom_s() -> None:
    # written out in association.py (the lean transports do not import pynetdicom): they must stay pynetdicom's,
    # so that lean C-GET files and the C-MOVE Storage SCP's are byte-identical
    from viewer.pacs.association import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

    assert (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME) == (
        str(PYNETDICOM_IMPLEMENTATION_UID), PYNETDICOM_IMPLEMENTATION_VERSION)


def test_associate_rq_is_what_pynetdicom_decodes() -> None:
    rq = pdu.AssociateRequest(
        calling_ae="MIFAS", called_ae="ORTHANC",
        contexts=[pdu.ProposedContext(1, str(StudyRootQueryRetrieveInformationModelGet), (ImplicitVRLittleEndian,)),
                  pdu.ProposedContext(3, str(CTImageStorage), ("1.2.840.10008.1.2.1", ImplicitVRLittleEndian))],
        scp_role_sop_classes=[str(CTImageStorage)], max_pdu_bytes=1 << 20,
        implementation_class_uid="1.2.3", implementation_version_name="MIFAS_1")
    decoded = A_ASSOCIATE_RQ()
    decoded.decode(pdu.encode_associate_rq(rq))
    assert decoded.calling_ae_title == "MIFAS" and decoded.called_ae_title == "ORTHANC"
    contexts = decoded.presentation_context
    assert [cx.context_id for cx in contexts] == [1, 3]
    assert [str(ts) for ts in contexts[1].transfer_syntax] == ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian]
    user = decoded.user_information
    assert user.maximum_length == 1 << 20
    assert str(user.implementation_class_uid) == "1.2.3" and user.implementation_version_name == "MIFAS_1"
    (role,) = user.role_selection.values()
    assert str(role.sop_class_uid) == str(CTImageStorage) and role.scp_role and not role.scu_role


def test_command_round_trip() -> None:
    data = pdu.encode_command({pdu.CommandTag.COMMAND_FIELD: pdu.CommandField.C_STORE_RSP,
                               pdu.CommandTag.STATUS: 0xA700, pdu.CommandTag.AFFECTED_SOP_INSTANCE_UID: "1.2.3"})
    assert struct.unpack_from("<L", data, 8)[0] == len(data) - 12  # (0000,0000) Command Group Length
    assert pdu.decode_command(data) == {pdu.CommandTag.COMMAND_FIELD: 0x8001, pdu.CommandTag.STATUS: 0xA700,
                                        pdu.CommandTag.AFFECTED_SOP_INSTANCE_UID: "1.2.3"}
    with pytest.raises(pdu.ProtocolError):
        pdu.decode_command(data[:-2])


def test_p_data_fragments_fit_the_peer_maximum() -> None:
    pdus = pdu.encode_p_data(5, False, bytes(range(256)) * 10, max_pdu_bytes=1000)
    assert all(len(p) - pdu.PDU_HEADER_BYTES <= 1000 for p in pdus)
    controls = [p[pdu.PDU_HEADER_BYTES + 5] for p in pdus]
    assert controls == [0] * (len(pdus) - 1) + [pdu.MCH_LAST_FRAGMENT]
    assert b"".join(p[pdu.PDU_HEADER_BYTES + pdu.PDV_HEADER_BYTES:] for p in pdus) == bytes(range(256)) * 10


# -- against the real Orthanc ----------------------------------------------------------------------------------


@pytest.mark.network
def test_study_bytes_identical_to_pynetdicom_and_same_as_source(node: Node, seed_data: Seed) -> None:
    for study in sorted(seed_data.study_uids()):
        ours, theirs = Collector(), Collector()
        classes = {sop_class_of(seed_data.files[uid]) for uid in seed_data.instances_of(study)}
        result = FastGetClient(node).get(study, sink=ours, sop_class_uids=classes)
        theirs.items = pynetdicom_get(node, study, sop_class_uids=classes)
        got, want = by_uid(ours.items), by_uid(theirs.items)
        assert got == want  # byte for byte: preamble, file meta, data set
        assert set(got) == seed_data.instances_of(study)
        assert result.completed == len(got) and result.failed == 0
        assert sorted(result.sop_instance_uids) == sorted(got) and result.bytes == sum(map(len, got.values()))
        for uid, data in got.items():
            assert_same_instance(data, seed_data.files[uid])


@pytest.mark.network
def test_series_level(node: Node, seed_data: Seed) -> None:
    sink = Collector()
    result = FastGetClient(node).get(seed_data.two_series_study, seed_data.two_series[1], sink=sink)
    series = {str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(d)).SeriesInstanceUID) for d in sink.items}
    assert series == {seed_data.two_series[1]} and result.completed == len(sink.items) == 5


@pytest.mark.network
@pytest.mark.parametrize("associations", [1, 3])
def test_image_level_list_over_lanes(monkeypatch: pytest.MonkeyPatch, node: Node, seed_data: Seed,
                                     associations: int) -> None:
    monkeypatch.setattr(fastget, "LANE_INSTANCES_MIN", 4)  # 31 instances -> several lanes
    monkeypatch.setattr(query, "SOP_UIDS_PER_REQUEST_MAX", 3)  # several C-GET requests per lane
    uids = sorted(r["SOPInstanceUID"] for r in DimseClient(node).find(
        "image", {"StudyInstanceUID": seed_data.ct_study, "SeriesInstanceUID": seed_data.ct_series}))
    wanted = uids[:-1]  # all but one: a resumed transfer
    sink = Collector()
    progress: list[tuple[int, int | None]] = []
    client = FastGetClient(node, associations=associations)
    result = client.get(seed_data.ct_study, seed_data.ct_series, wanted, sink=sink,
                        progress=lambda done, total: progress.append((done, total)))
    assert sorted(by_uid(sink.items)) == wanted
    assert result.completed == 30 and result.failed == 0 and sorted(result.sop_instance_uids) == wanted
    assert sorted(d for d, _ in progress) == list(range(1, 31)) and {t for _, t in progress} == {30}
    for data in sink.items:
        assert_same_instance(data, seed_data.files[Collector.uid_of(data)])


@pytest.mark.network
def test_storage_full_stops_every_lane(monkeypatch: pytest.MonkeyPatch, node: Node, seed_data: Seed) -> None:
    monkeypatch.setattr(fastget, "LANE_INSTANCES_MIN", 4)
    monkeypatch.setattr(query, "SOP_UIDS_PER_REQUEST_MAX", 3)
    uids = sorted(seed_data.instances_of(seed_data.ct_study))
    sink = Collector()
    lock = threading.Lock()

    def filling(data: bytes) -> None:
        with lock:
            if len(sink.items) >= 5:
                raise StorageFullError("The disk holding the library is full.")
            sink(data)

    with pytest.raises(StorageFullError):
        FastGetClient(node, associations=3).get(seed_data.ct_study, seed_data.ct_series, uids, sink=filling)
    assert len(sink.items) == 5


@pytest.mark.network
def test_wrong_called_ae_title_is_rejected(orthanc: OrthancProcess, seed_data: Seed) -> None:
    node = local_node(orthanc.dicom_port, ae_title="NOTORTHANC", timeouts=PATIENT)
    with pytest.raises(AssociationRejectedError) as caught:
        FastGetClient(node).get(seed_data.ct_study, sink=lambda data: None)
    assert str(caught.value) == (f"The PACS at 127.0.0.1:{orthanc.dicom_port} rejected our association: it is not "
                                 f"called 'NOTORTHANC' (called AE title not recognised; calling AE '{CALLING_AE}').")


# -- raw sockets -----------------------------------------------------------------------------------------------


@pytest.mark.network
def test_closed_port_is_unreachable() -> None:
    with pytest.raises(NodeUnreachableError, match=r"refused the connection \(nothing is listening there\)"):
        FastGetClient(local_node(free_port())).get("1.2.3", sink=lambda data: None)


def accept_get_context(conn: socket.socket) -> None:
    accept_first_context(conn, CALLING_AE)


@pytest.mark.network
def test_silent_server_times_out_on_association(scripted_peer: Callable[..., int]) -> None:
    port = scripted_peer(hold)
    with pytest.raises(PacsTimeoutError, match="did not answer the association request within 1 s"):
        FastGetClient(local_node(port)).get("1.2.3", sink=lambda data: None)


@pytest.mark.network
def test_peer_silent_after_the_request_times_out(scripted_peer: Callable[..., int]) -> None:
    port = scripted_peer(lambda conn: (accept_get_context(conn), hold(conn)))
    with pytest.raises(PacsTimeoutError, match="nothing received for 1 s during the C-GET"):
        FastGetClient(local_node(port)).get("1.2.3", sink=lambda data: None)


@pytest.mark.network
def test_peer_that_aborts_the_association_request(scripted_peer: Callable[..., int]) -> None:
    port = scripted_peer(lambda conn: (read_pdu(conn), conn.sendall(pdu.encode_abort(2, 0)), hold(conn)))
    with pytest.raises(AssociationAbortedError, match="aborted the association request"):
        FastGetClient(local_node(port)).get("1.2.3", sink=lambda data: None)


@pytest.mark.network
def test_peer_that_aborts_during_the_get(scripted_peer: Callable[..., int]) -> None:
    def script(conn: socket.socket) -> None:
        accept_get_context(conn)
        read_pdu(conn)  # the C-GET-RQ command (one PDU, one PDV)
        read_pdu(conn)  # its identifier
        conn.sendall(pdu.encode_abort(2, 0))
        hold(conn)

    port = scripted_peer(script)
    with pytest.raises(AssociationAbortedError, match="aborted the association during the C-GET"):
        FastGetClient(local_node(port)).get("1.2.3", sink=lambda data: None)


@pytest.mark.network
def test_oversized_pdu_is_refused(scripted_peer: Callable[..., int]) -> None:
    def script(conn: socket.socket) -> None:
        accept_get_context(conn)
        read_pdu(conn)
        read_pdu(conn)
        conn.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0))  # a P-DATA-TF claiming 4 GiB
        hold(conn)

    port = scripted_peer(script)
    with pytest.raises(AssociationAbortedError, match="broke the DICOM protocol.*more than the"):
        FastGetClient(local_node(port)).get("1.2.3", sink=lambda data: None)


# -- a pynetdicom C-GET SCP as the peer ------------------------------------------------------------------------


@pytest.fixture
def get_scp() -> Iterator[Callable[..., int]]:
    """A pynetdicom C-GET SCP serving `datasets`, sleeping `delay_s` before each; started per test."""
    servers = []

    def start(datasets: list[pydicom.Dataset], delay_s: float = 0.0, abort_after: int | None = None) -> int:
        def on_get(event: evt.Event) -> Iterator[object]:
            yield len(datasets)
            for index, ds in enumerate(datasets):
                if event.is_cancelled:
                    yield 0xFE00, None  # Cancel
                    return
                if abort_after is not None and index == abort_after:
                    event.assoc.abort()
                    return
                time.sleep(delay_s)
                yield 0xFF00, ds

        ae = AE(ae_title="ANYSCP")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(CTImageStorage, scu_role=False, scp_role=True)
        port = free_port()
        servers.append(ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_GET, on_get)]))
        return port

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.network
def test_cancel_sends_c_cancel_and_keeps_what_arrived(get_scp: Callable[..., int]) -> None:
    datasets = ct_series(20)
    port = get_scp(datasets, delay_s=0.05)
    cancel = threading.Event()
    sink = Collector()

    def cancelling(data: bytes) -> None:
        sink(data)
        if len(sink.items) == 3:
            cancel.set()

    with pytest.raises(OperationCancelled):
        FastGetClient(local_node(port, timeouts=PATIENT)).get(study_of(datasets), sink=cancelling, cancel=cancel)
    assert 3 <= len(sink.items) < 20


@pytest.mark.network
def test_abort_in_the_middle_keeps_what_arrived(get_scp: Callable[..., int]) -> None:
    datasets = ct_series(6)
    port = get_scp(datasets, abort_after=2)
    sink = Collector()
    with pytest.raises(AssociationAbortedError, match="aborted the association during the C-GET"):
        FastGetClient(local_node(port, timeouts=PATIENT)).get(study_of(datasets), sink=sink)
    assert sorted(by_uid(sink.items)) == sorted(str(ds.SOPInstanceUID) for ds in datasets[:2])


@pytest.mark.network
def test_refused_instance_is_reported_and_the_rest_stored(get_scp: Callable[..., int]) -> None:
    datasets = ct_series(4)
    bad = str(datasets[1].SOPInstanceUID)
    sink = Collector()

    def picky(data: bytes) -> None:
        if Collector.uid_of(data) == bad:
            raise MalformedDicomError("This instance is damaged.")
        sink(data)

    result = FastGetClient(local_node(get_scp(datasets), timeouts=PATIENT)).get(study_of(datasets), sink=picky)
    assert result.completed == 3 and result.failed == 1
    assert bad not in by_uid(sink.items) and len(sink.items) == 3


@pytest.mark.network
def test_whole_transfer_deadline_is_separate_from_the_idle_timeout(get_scp: Callable[..., int]) -> None:
    datasets = ct_series(40)
    port = get_scp(datasets, delay_s=0.05)  # always moving: the idle timeout (10 s) never fires
    sink = Collector()
    with pytest.raises(PacsTimeoutError, match="did not finish within its time limit"):
        FastGetClient(local_node(port, timeouts=PATIENT)).get(study_of(datasets), sink=sink, deadline_s=0.5)
    assert 1 <= len(sink.items) < 40


@pytest.mark.network
def test_too_large_instance_is_refused(get_scp: Callable[..., int]) -> None:
    datasets = ct_series(3)  # 64x64x2 bytes of pixels each
    port = get_scp(datasets)
    sink = Collector()
    client = FastGetClient(local_node(port, timeouts=PATIENT), dataset_bytes_max=4096)
    with pytest.raises(PacsStatusError, match=r"status 0xA702"):  # every sub-operation failed (PS3.4 C.4.3.3.1)
        client.get(study_of(datasets), sink=sink)
    assert sink.items == []


def open_sockets() -> int:
    import os

    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:
            continue
    return count


@pytest.mark.network
def test_no_socket_left_open(scripted_peer: Callable[..., int], node: Node, seed_data: Seed) -> None:
    silent = scripted_peer(lambda conn: (accept_get_context(conn), hold(conn)))
    before = open_sockets()
    FastGetClient(node).get(seed_data.two_series_study, sink=lambda data: None)
    with pytest.raises(PacsTimeoutError):
        FastGetClient(local_node(silent)).get("1.2.3", sink=lambda data: None)
    with pytest.raises(NodeUnreachableError):
        FastGetClient(local_node(free_port())).get("1.2.3", sink=lambda data: None)
    deadline = time.monotonic() + 5  # the silent peer's side closes when it notices ours closed
    while open_sockets() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_sockets() == before


@pytest.mark.network
def test_instance_not_asked_for_is_refused_and_reported(get_scp: Callable[..., int]) -> None:
    datasets = ct_series(4)  # the SCP sends all four whatever is asked
    wanted = sorted(str(ds.SOPInstanceUID) for ds in datasets[:2])
    sink = Collector()
    client = FastGetClient(local_node(get_scp(datasets), timeouts=PATIENT), associations=1)
    result = client.get(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), wanted, sink=sink)
    assert sorted(by_uid(sink.items)) == wanted == sorted(result.sop_instance_uids)
    assert result.failed == 2  # the peer counts our refusals as failed sub-operations
    assert sorted(result.unrequested_sop_instance_uids) == sorted(str(ds.SOPInstanceUID) for ds in datasets[2:])


@pytest.mark.network
def test_instance_of_another_study_is_refused_at_study_level(get_scp: Callable[..., int]) -> None:
    mine = ct_series(2)
    other = ct_series(1, patient_name="Other^Patient", patient_id="OTHER-1")  # another study: slipped in
    sink = Collector()
    client = FastGetClient(local_node(get_scp([*mine, *other]), timeouts=PATIENT), associations=1)
    result = client.get(study_of(mine), sink=sink)
    assert sorted(by_uid(sink.items)) == sorted(str(ds.SOPInstanceUID) for ds in mine)
    assert result.unrequested_sop_instance_uids == (str(other[0].SOPInstanceUID),)


# -- into the library (group commit) and as DimseClient.get's default path ----------------------------------


@pytest.mark.network
def test_into_the_library_through_a_group_writer(monkeypatch: pytest.MonkeyPatch, node: Node, seed_data: Seed,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(fastget, "LANE_INSTANCES_MIN", 4)  # several lanes submitting to one writer
    uids = sorted(seed_data.instances_of(seed_data.ct_study))
    theirs = Collector()
    theirs.items = pynetdicom_get(node, seed_data.ct_study, seed_data.ct_series, uids)
    progress: list[tuple[int, int | None]] = []
    with Library.open(tmp_path / "lib") as library:
        with GroupWriter(library, batch_instances_max=4) as writer:
            result = FastGetClient(node, associations=3).get(
                seed_data.ct_study, seed_data.ct_series, uids, sink=writer,
                progress=lambda done, total: progress.append((done, total)))
            # get() returns once every instance is committed: the library already says so
            assert library.instance_uids(seed_data.ct_series) == set(uids) == set(result.sop_instance_uids)
        assert result.completed == len(uids) and result.failed == 0
        assert result.bytes == sum(len(d) for d in theirs.items)
        assert sorted(d for d, _ in progress) == list(range(1, len(uids) + 1))
        for uid, data in by_uid(theirs.items).items():
            assert library.path_of(uid).read_bytes() == data  # byte for byte as pynetdicom receives it
        assert library.partial_files() == [] and library.fsck() == {"orphans_removed": 0, "missing": 0}


@pytest.mark.network
def test_dimse_client_get_is_the_lean_client(monkeypatch: pytest.MonkeyPatch, node: Node, seed_data: Seed) -> None:
    calls: list[str] = []
    lean_get = FastGetClient.get

    def spy(self: FastGetClient, *args: object, **kwargs: object) -> object:
        calls.append("lean")
        return lean_get(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FastGetClient, "get", spy)
    sink = Collector()
    assert DimseClient(node).get(seed_data.two_series_study, sink=sink).completed == 10 and calls == ["lean"]
