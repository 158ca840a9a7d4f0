"""DIMSE failures, each produced for real: a closed port, a wrong called AE title (Orthanc rejects it), a TCP
server that never speaks, a pynetdicom SCP that never answers a C-FIND, an Orthanc that does not know us."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, Seed, ct_series, part10
from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    NodeUnreachableError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
)
from viewer.pacs import DimseClient, StorageScp
from viewer.pacs.node import Node, Timeouts

pytestmark = pytest.mark.network

QUICK = Timeouts(connect_s=1.0, acse_s=1.0, dimse_s=1.0, network_s=2.0)  # for the peers that never answer
PATIENT = Timeouts(connect_s=2.0, acse_s=10.0, dimse_s=10.0, network_s=20.0)  # for Orthanc on a busy machine


def local_node(port: int, ae_title: str = "ANYSCP", timeouts: Timeouts = QUICK) -> Node:
    return Node(name="test", ae_title=ae_title, host="127.0.0.1", port=port, calling_ae=CALLING_AE, timeouts=timeouts)


def test_closed_port_is_unreachable() -> None:
    # The port stays bound (not listening) for the test: a port merely found free may be picked by the kernel as
    # our own source port, and a connection to oneself (TCP simultaneous open) then "answers".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(NodeUnreachableError, match=r"refused the connection \(nothing is listening there\)"):
            DimseClient(local_node(port)).echo()


def test_unknown_host_is_unreachable() -> None:
    node = Node(name="x", ae_title="X", host="no-such-host.invalid", port=104, timeouts=QUICK)
    with pytest.raises(NodeUnreachableError, match="could not be found"):
        DimseClient(node).echo()


def test_wrong_called_ae_title_is_rejected(orthanc: OrthancProcess) -> None:
    node = local_node(orthanc.dicom_port, ae_title="NOTORTHANC", timeouts=PATIENT)
    with pytest.raises(AssociationRejectedError) as caught:
        DimseClient(node).echo()
    assert str(caught.value) == (f"The PACS at 127.0.0.1:{orthanc.dicom_port} rejected our association: it is not "
                                 f"called 'NOTORTHANC' (called AE title not recognised; calling AE '{CALLING_AE}').")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.1)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_server_that_never_answers_times_out(silent_server: int) -> None:
    with pytest.raises(PacsTimeoutError, match="did not answer the association request within 1 s"):
        DimseClient(local_node(silent_server)).echo()


@pytest.fixture
def hanging_find_scp() -> Iterator[tuple[int, threading.Event]]:
    """A real pynetdicom Q/R SCP whose C-FIND handler answers nothing until released."""
    release = threading.Event()

    def on_find(event):  # noqa: ANN001 - pynetdicom handler
        release.wait(10)
        yield 0x0000, None

    ae = AE(ae_title="HANGSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    yield server.server_address[1], release
    release.set()
    server.shutdown()


def test_peer_silent_during_find_times_out(hanging_find_scp: tuple[int, threading.Event]) -> None:
    port, _ = hanging_find_scp
    client = DimseClient(local_node(port, "HANGSCP", Timeouts(connect_s=2, acse_s=10, dimse_s=1, network_s=20)))
    assert client.echo() >= 0  # the association itself works
    with pytest.raises(PacsTimeoutError, match="nothing received for 1 s during the C-FIND"):
        client.find("study", {"PatientID": "X"})


@pytest.fixture
def slow_find_scp() -> Iterator[int]:
    """A real pynetdicom Q/R SCP that takes its time over a C-FIND but honours C-CANCEL (PS3.4 C.4.1.2.3)."""

    def on_find(event):  # noqa: ANN001 - pynetdicom handler
        for _ in range(200):
            if event.is_cancelled:
                yield 0xFE00, None  # Cancel
                return
            threading.Event().wait(0.05)
        yield 0x0000, None

    ae = AE(ae_title="SLOWSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    yield server.server_address[1]
    server.shutdown()


def test_cancelled_find_stops(slow_find_scp: int) -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    node = local_node(slow_find_scp, "SLOWSCP", Timeouts(connect_s=1, acse_s=1, dimse_s=30, network_s=30))
    with pytest.raises(OperationCancelled, match="The search was cancelled"):
        DimseClient(node).find("study", {}, cancel=cancel)


def test_cancel_before_start_does_nothing(node: Node, seed_data: Seed) -> None:
    cancel = threading.Event()
    cancel.set()
    received: list[bytes] = []
    with pytest.raises(OperationCancelled):
        DimseClient(node).get(seed_data.ct_study, sink=received.append, cancel=cancel)
    assert received == []


def test_unknown_move_destination(node: Node, seed_data: Seed) -> None:
    # PS3.4 C.4.2.1.5 has 0xA801 "Move Destination Unknown"; Orthanc 1.10 answers 0xC000 instead.
    with DimseClient(node, storage_port=0) as client:
        with pytest.raises(PacsStatusError, match="knows 'NOBODY' as a C-MOVE destination") as caught:
            client.move(seed_data.two_series_study, sink=lambda data: None, destination_ae="NOBODY")
    assert caught.value.status in (0xA801, 0xC000)


def test_storage_port_in_use(node: Node, seed_data: Seed) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with DimseClient(node, via="move", storage_port=port, storage_address="127.0.0.1") as client:
            with pytest.raises(PacsError, match=f"Cannot receive images on 127.0.0.1:{port}"):
                client.retrieve(seed_data.two_series_study, sink=lambda data: None)


def test_storage_scp_refuses_stores_outside_a_retrieval(orthanc: OrthancProcess) -> None:
    """Orthanc pushes (C-STORE via REST) to our SCP while no retrieval runs: refused, nothing stored."""
    with StorageScp(CALLING_AE, free_port(), "127.0.0.1") as scp:
        orthanc.add_modality("stray", CALLING_AE, "127.0.0.1", scp.port)
        instance = orthanc.rest("GET", "/instances")[0]
        with pytest.raises(PacsError):
            orthanc.rest("POST", "/modalities/stray/store", json={"Resources": [instance], "Synchronous": True})


@pytest.fixture(scope="module")
def strict_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """An Orthanc that serves only the modalities it lists (we are not among them)."""
    with OrthancProcess(tmp_path_factory.mktemp("strict"), aet="STRICT", always_allow=False, dicomweb=False,
                        remote_access=False) as o:
        o.upload_bytes(part10(ct_series(1, seed=9)[0]))
        yield o


def test_unknown_caller_is_aborted_on_get(strict_orthanc: OrthancProcess) -> None:
    study = strict_orthanc.rest("GET", "/studies?expand")[0]["MainDicomTags"]["StudyInstanceUID"]
    client = DimseClient(strict_orthanc.node(calling_ae="STRANGER", timeouts=PATIENT))
    assert client.echo() >= 0  # C-ECHO is always allowed
    with pytest.raises(AssociationAbortedError, match="may not allow C-GET from our AE title 'STRANGER'"):
        client.get(study, sink=lambda data: None)


def test_storage_scp_refuses_a_huge_association_request_before_buffering_it() -> None:
    """A peer announces a 4 GiB A-ASSOCIATE-RQ and streams its body: the Storage SCP closes the connection after
    the header (pynetdicom alone would read on, holding everything, until the 4 GiB arrived).  The send of 64 MiB
    can only complete if the SCP keeps reading; then a well-formed association is still accepted."""
    with StorageScp("MIFASSCP", 0, "127.0.0.1") as scp:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as peer:
            peer.sendall(b"\x01\x00\xff\xff\xff\xff")
            with pytest.raises((BrokenPipeError, ConnectionResetError)):  # it closed with our data unread: RST
                for _ in range(64):
                    peer.sendall(bytes(1 << 20))
        ae = AE(ae_title=CALLING_AE)
        ae.add_requested_context(Verification)
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MIFASSCP")
        try:
            assert assoc.is_established
        finally:
            assoc.release()
