"""Our Storage SCP (PS3.4 B.2.2): the destination of our C-MOVEs, nothing else.

It listens only while a C-MOVE of ours may send to it (:meth:`StorageScp.receiving`), and stores nothing of its
own: every C-STORE goes to that retrieval's :class:`~viewer.pacs.sink.InstanceSink`, which accepts only the
instances the C-MOVE asked for.  Before that, the association must come from the node we asked: its calling AE
title and its IP address must be among the retrieval's :class:`Peers` (the node, or a cluster's virtual IP and
members).  Anyone else on the network who sends us an instance during a retrieval (a third party's storescu)
gets Refused: Not Authorized and the retrieval reports it; a C-STORE outside a retrieval gets Out of Resources.
"""

from __future__ import annotations

import functools
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from viewer.errors import PacsError
from viewer.imports import need
from viewer.limits import ASSOCIATE_RQ_BYTES_MAX
from viewer.pacs.association import MAX_PDU_BYTES
from viewer.pacs.contexts import storage_scp_contexts
from viewer.pacs.node import validate_ae_title, validate_port
from viewer.pacs.pdu import PDU_HEADER_BYTES
from viewer.pacs.sink import FOREIGN_PEER, InstanceSink
from viewer.pacs.status import DimseStatus

if TYPE_CHECKING:
    from viewer.pacs.tls import TlsSettings

log = logging.getLogger(__name__)

DEFAULT_STORAGE_ADDRESS = "0.0.0.0"
SCP_POLL_S = 0.05  # how often the Storage SCP's accept loop checks for stop()
PEER_ADDRESSES_MAX = 64  # addresses a host name may resolve to that we keep


class Activity:
    """When the peer last sent us anything (a PDU on any association of the operation), and how many PDUs."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.pdus = 0

    def touch(self, event: Any = None) -> None:
        """EVT_PDU_RECV handler (with an event), or a restart of the clock (without)."""
        self.last = time.monotonic()
        if event is not None:
            self.pdus += 1


@dataclass(frozen=True)
class Peers:
    """Who may send us instances during a retrieval: calling AE titles and IP addresses."""

    ae_titles: frozenset[str]
    addresses: frozenset[str]

    @classmethod
    def of(cls, ae_titles: Iterable[str], hosts: Iterable[str]) -> Peers:
        """The peers for these AE titles and hosts (names resolved now; a name that does not resolve adds
        nothing, so its node simply cannot send)."""
        addresses: set[str] = set()
        for host in hosts:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except OSError:
                continue
            addresses.update(str(info[4][0]) for info in infos[:PEER_ADDRESSES_MAX])
        return cls(frozenset(a.strip() for a in ae_titles), frozenset(addresses))

    def admits(self, ae_title: str, address: str) -> bool:
        address = address.removeprefix("::ffff:")  # an IPv4 peer on a dual-stack socket
        return ae_title.strip() in self.ae_titles and address in self.addresses


class PduBound:
    """Mixin for the sockets our Storage SCP reads with: follows the PDU headers (PS3.8 9.3.1: type, reserved,
    4-byte length) in what pynetdicom reads and refuses, before buffering it, a first PDU (the A-ASSOCIATE-RQ)
    longer than ASSOCIATE_RQ_BYTES_MAX or any later PDU longer than the Maximum Length we announce."""

    _header = b""
    _remaining = 0  # bytes of the current PDU's body still to come
    _pdus = 0

    def _bound(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._remaining:
                step = min(self._remaining, len(view))
                self._remaining -= step
                view = view[step:]
                continue
            need = PDU_HEADER_BYTES - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) == PDU_HEADER_BYTES:
                length = int.from_bytes(self._header[2:6], "big")
                limit = ASSOCIATE_RQ_BYTES_MAX if self._pdus == 0 else MAX_PDU_BYTES
                if length > limit:
                    raise ConnectionAbortedError(f"a peer announced a PDU of {length} bytes (limit {limit})")
                self._pdus += 1
                self._header, self._remaining = b"", length

    def recv(self, bufsize: int, *args: Any) -> bytes:
        data = super().recv(bufsize, *args)  # type: ignore[misc]
        self._bound(data)
        return data  # type: ignore[no-any-return]


class _BoundedSocket(PduBound, socket.socket):
    pass


@functools.cache
def _bounded_ssl_socket() -> type:
    import ssl

    class BoundedSSLSocket(PduBound, ssl.SSLSocket):
        pass

    return BoundedSSLSocket


class StorageScp:
    """Binds `address`:`port` (``0.0.0.0`` = every interface; the PACS must reach it and list our AE title with
    this port); start()/stop() or a context manager.  A DimseClient keeps it listening between its retrievals
    and stops it on close()."""

    def __init__(self, ae_title: str, port: int, address: str = DEFAULT_STORAGE_ADDRESS,
                 network_timeout_s: float = 60.0, tls: TlsSettings | None = None) -> None:
        self.ae_title = validate_ae_title(ae_title, "storage AE title")
        self.tls = tls  # set: only TLS associations, from a PACS whose certificate our CA signed
        self.port = validate_port(port) if port else 0  # 0: the OS picks one (see .port after start())
        self.address = address
        self.activity = Activity()
        self._network_timeout_s = network_timeout_s
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._receiving: tuple[InstanceSink, Peers] | None = None
        self._lock = threading.Lock()

    def start(self) -> StorageScp:
        if self._server is not None:
            return self
        need("pynetdicom")
        from pynetdicom import AE, evt  # here: only a C-MOVE starts a Storage SCP
        from pynetdicom.transport import ThreadedAssociationServer

        class Server(ThreadedAssociationServer):  # type: ignore[misc]
            def get_request(self) -> tuple[socket.socket, Any]:
                """pynetdicom does the TLS handshake here, in the accept loop: one peer that connects and stays
                silent would block every later one.  Wrapped without a handshake, the association's own thread
                does it on its first read, under its network timeout."""
                client, address = self.socket.accept()
                if self.ssl_context:  # its sslsocket_class is a PduBound one
                    return self.ssl_context.wrap_socket(client, server_side=True,
                                                        do_handshake_on_connect=False), address
                bounded = _BoundedSocket(client.family, client.type, client.proto, fileno=client.detach())
                return bounded, address

        from viewer.pacs.dimse import keep_patient_data_out_of_logs

        keep_patient_data_out_of_logs()
        ssl_context = None
        if self.tls is not None:
            from viewer.pacs.tls import server_context

            ssl_context = server_context(self.tls)
            ssl_context.sslsocket_class = _bounded_ssl_socket()  # our own server context: only this SCP uses it
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = storage_scp_contexts()
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.network_timeout = self._network_timeout_s
        ae.acse_timeout = self._network_timeout_s
        ae.dimse_timeout = self._network_timeout_s
        try:
            server = ae.make_server(
                (self.address, self.port), server_class=Server, ssl_context=ssl_context,
                evt_handlers=[(evt.EVT_C_STORE, self._on_c_store), (evt.EVT_PDU_RECV, self.activity.touch)],
            )
        except OSError as exc:
            raise PacsError(
                f"Cannot receive images on {self.address}:{self.port}: {exc.strerror or exc} "
                "(is another program using that port?).") from exc
        # Our own serving thread (not ae.start_server) so that the poll interval, and with it stop(), is short.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SCP_POLL_S},
                                        name="viewer.pacs.storage-scp", daemon=True)
        self._thread.start()
        self._server = server
        self.port = server.server_address[1]
        log.debug("storage SCP %s listening on %s:%d", self.ae_title, self.address, self.port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # socketserver's shutdown: pynetdicom's override also unregisters from ae.start_server's list,
        # which this server was never put on.
        socketserver.BaseServer.shutdown(server)
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> StorageScp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @contextmanager
    def receiving(self, sink: InstanceSink, peers: Peers) -> Iterator[None]:
        """Hand what `peers` send to `sink` while the block runs (one retrieval at a time)."""
        with self._lock:
            if self._receiving is not None:
                raise RuntimeError("this Storage SCP already serves a retrieval")
            self._receiving = (sink, peers)
        try:
            yield
        finally:
            with self._lock:
                self._receiving = None

    def _on_c_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "")
        receiving = self._receiving
        if receiving is None:
            log.warning("C-STORE of %s refused: no retrieval is running", uid)
            return DimseStatus.OUT_OF_RESOURCES
        sink, peers = receiving
        requestor = event.assoc.requestor
        if not peers.admits(str(requestor.ae_title), str(requestor.address)):
            log.warning("C-STORE from %s at %s refused: not the node the C-MOVE asked", requestor.ae_title,
                        requestor.address)
            return sink.refuse(uid, FOREIGN_PEER)
        return sink.offer(event.encoded_dataset(include_meta=True), uid)
