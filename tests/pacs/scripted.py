"""Deterministic hostile and interrupted peers for the retrieval engine's conformance tests (no tests here).

:class:`ScriptedPacs`
    A pynetdicom Query/Retrieve SCP on 127.0.0.1 (any calling AE title accepted) serving a fixed list of data
    sets: C-FIND (Study Root, STUDY/SERIES/IMAGE level, answering the keys asked, with the "Number of ...
    Related ..." counts computed), C-GET (IMAGE level with a UID list, SERIES, STUDY) and C-MOVE (to the
    destinations the test gives: AE title -> (host, port)).
:class:`ScriptedWado`
    A ThreadingHTTPServer with QIDO-RS (``/studies``, ``/studies/{s}/series``, ``/studies/{s}/instances``,
    ``/studies/{s}/series/{se}/instances``, DICOM JSON) and WADO-RS (study, series, instance as
    ``multipart/related; type="application/dicom"``, chunked, one HTTP chunk per part) for the same data sets.

Both take the same knobs:

``slip``
    Extra data sets sent on every retrieval without being asked for (after the first requested instance, or
    alone when nothing matched); ``slip_levels`` limits which requests get them ("study", "series",
    "instance": a DIMSE IMAGE-level request or a WADO-RS instance request).
``hold_after``
    After that many distinct served instances were sent in total (slips are not counted, nor a served instance
    sent again), the peer blocks before sending the next one: :attr:`holding` is set, and it waits for
    :attr:`release` (at most :data:`HOLD_MAX_S`).  A client process can then be killed mid-transfer at a known
    point.  Set ``hold_after = None`` and ``release.set()`` to let it go on.

And record, for the test to read: ``requested`` (every SOP Instance UID a retrieval request covered, in order;
a SERIES or STUDY request counts as all of its served instances), ``requests`` (service, level, UIDs),
``sent`` (served UIDs sent, in order) and, DIMSE only, ``store_status`` (SOP Instance UID -> the statuses our
side answered to its C-STORE sub-operations).

:func:`third_party_store` is someone else on the network C-STOREing to a port (our Storage SCP during a
C-MOVE) with a chosen calling AE title and source address; it returns the statuses it got.
"""

from __future__ import annotations

import fnmatch
import io
import json
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from viewer.pacs.pdu import APPLICATION_CONTEXT_NAME

HOLD_MAX_S = 60.0  # a held transfer waits at most this long for release (a test that forgets does not hang)
STORE_SOP_CLASSES = (CTImageStorage,)
C_STORE_RSP = 0x8001
LEVELS = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}

STUDY_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName")
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
               "BodyPartExamined")
# What QIDO-RS answers at each level (plus the computed counts).
QIDO_KEYS = {
    "study": (*STUDY_KEYS, "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "series": ("StudyInstanceUID", *SERIES_KEYS, "NumberOfSeriesRelatedInstances"),
    "instance": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
                 "Rows", "Columns"),
}
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
_QIDO_CONTROL = frozenset({"includefield", "limit", "offset", "fuzzymatching"})


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value)
    return str(value)


def _matches(value: str, pattern: str, keyword: str) -> bool:
    """PS3.4 C.2.2.2 matching, as much as the engine uses: UID lists, wildcards, single values."""
    if pattern in ("", "*"):
        return True
    if keyword.endswith("UID"):
        return value in {p.strip() for p in pattern.replace(",", "\\").split("\\")}
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(value, pattern)
    return value == pattern


class _Instance:
    """One served (or slipped) instance: its Part 10 bytes and the data set read back from them."""

    def __init__(self, ds: Dataset) -> None:
        self.data = _part10(ds)
        self.ds = pydicom.dcmread(io.BytesIO(self.data))
        self.uid = str(self.ds.SOPInstanceUID)
        self.study_uid = str(self.ds.StudyInstanceUID)
        self.series_uid = str(self.ds.SeriesInstanceUID)

    def value(self, keyword: str) -> str:
        return _text(self.ds.get(keyword)) if keyword in self.ds else ""


class _Script:
    """What both scripted peers share: the data sets, the knobs, the logs and the hold."""

    def __init__(self, datasets: Iterable[Dataset], *, slip: Iterable[Dataset] = (),
                 slip_levels: Iterable[str] = ("study", "series", "instance"),
                 hold_after: int | None = None) -> None:
        self.instances = [_Instance(ds) for ds in datasets]
        self.by_uid = {i.uid: i for i in self.instances}
        self.slip = [_Instance(ds) for ds in slip]
        self.slip_levels = frozenset(slip_levels)
        self.hold_after = hold_after
        self.release = threading.Event()
        self.holding = threading.Event()
        self.requested: list[str] = []
        self.requests: list[tuple[str, str, tuple[str, ...]]] = []
        self.sent: list[str] = []
        self._sent_distinct: set[str] = set()
        self._lock = threading.Lock()

    # -- the logs ---------------------------------------------------------------------------------------

    @property
    def sent_distinct(self) -> set[str]:
        with self._lock:
            return set(self._sent_distinct)

    def _note_request(self, service: str, level: str, uids: Sequence[str]) -> None:
        with self._lock:
            self.requests.append((service, level, tuple(uids)))
            self.requested.extend(uids)

    # -- what a request covers ------------------------------------------------------------------------------

    def _select(self, study_uid: str, series_uid: str = "", sop_uids: Iterable[str] | None = None) -> list[_Instance]:
        wanted = None if sop_uids is None else set(sop_uids)
        return [i for i in self.instances if i.study_uid == study_uid and (not series_uid or i.series_uid == series_uid)
                and (wanted is None or i.uid in wanted)]

    def _plan(self, level: str, served: list[_Instance]) -> list[tuple[_Instance, bool]]:
        """What to send for one request: the served instances, with the slips after the first one."""
        plan = [(i, True) for i in served]
        if level in self.slip_levels and self.slip:
            plan[1:1] = [(i, False) for i in self.slip]
        return plan

    def _gate(self, instance: _Instance, served: bool) -> bool:
        """Call before sending each instance: holds when `hold_after` distinct served instances were sent.
        Returns whether the instance was released (True) or the hold timed out (False)."""
        if served:
            with self._lock:
                hold = (self.hold_after is not None and instance.uid not in self._sent_distinct
                        and len(self._sent_distinct) >= self.hold_after)
            if hold:
                self.holding.set()
                if not self.release.wait(HOLD_MAX_S):
                    return False
        return True

    def _sent(self, instance: _Instance, served: bool) -> None:
        if served:
            with self._lock:
                self.sent.append(instance.uid)
                self._sent_distinct.add(instance.uid)

    # -- queries (C-FIND and QIDO-RS alike) ---------------------------------------------------------------------

    def rows(self, level: str, filters: Mapping[str, str], keys: Iterable[str]) -> list[dict[str, str]]:
        """``{keyword: text}`` per match at `level` ("study", "series", "instance") for the `keys` asked."""
        keys = list(dict.fromkeys(keys))
        groups: dict[tuple[str, ...], list[_Instance]] = {}
        for instance in self.instances:
            key = {"study": (instance.study_uid,), "series": (instance.study_uid, instance.series_uid),
                   "instance": (instance.uid,)}[level]
            groups.setdefault(key, []).append(instance)
        rows = []
        for members in groups.values():
            first = members[0]
            study = [i for i in self.instances if i.study_uid == first.study_uid]
            computed = {
                "NumberOfSeriesRelatedInstances": str(len(members)) if level == "series" else "",
                "NumberOfStudyRelatedInstances": str(len(study)),
                "NumberOfStudyRelatedSeries": str(len({i.series_uid for i in study})),
                "ModalitiesInStudy": "\\".join(sorted({i.value("Modality") for i in study} - {""})),
            }
            allowed = set(STUDY_KEYS) | set(computed)
            if level in ("series", "instance"):
                allowed |= {"SeriesInstanceUID", *SERIES_KEYS}
            row = {}
            for keyword in (*keys, *filters):
                if keyword in computed and keyword in allowed:
                    row[keyword] = computed[keyword]
                elif level == "instance" or keyword in allowed:
                    row[keyword] = first.value(keyword)
                else:
                    row[keyword] = ""
            if all(_matches(row.get(k, ""), v, k) for k, v in filters.items()):
                rows.append({k: row[k] for k in keys})
        return rows


# -- DIMSE ----------------------------------------------------------------------------------------------------


class ScriptedPacs(_Script):
    """A Q/R SCP on 127.0.0.1 serving `datasets` (see the module docstring).  `move_destinations`: C-MOVE
    destination AE title -> (host, port).  `before_move()` runs during each C-MOVE, after the association to
    the destination is up and before any instance is sent (a third party can act then).
    `answer_image_level=False`: IMAGE-level C-FINDs find nothing (some PACS do not answer them)."""

    def __init__(self, datasets: Iterable[Dataset], *, ae_title: str = "SCRIPTED", slip: Iterable[Dataset] = (),
                 slip_levels: Iterable[str] = ("study", "series", "instance"), hold_after: int | None = None,
                 move_destinations: Mapping[str, tuple[str, int]] | None = None,
                 before_move: Callable[[], None] | None = None, answer_image_level: bool = True) -> None:
        super().__init__(datasets, slip=slip, slip_levels=slip_levels, hold_after=hold_after)
        self.ae_title = ae_title
        self.move_destinations = dict(move_destinations or {})
        self.before_move = before_move
        self.answer_image_level = answer_image_level
        self.store_status: dict[str, list[int]] = {}
        self.port = 0
        self._server: Any = None

    def start(self) -> ScriptedPacs:
        ae = AE(ae_title=self.ae_title)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        for model in (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
                      StudyRootQueryRetrieveInformationModelMove):
            ae.add_supported_context(model)
        for sop_class in STORE_SOP_CLASSES:  # C-GET: we send on the requestor's association (SCP role)
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian], scu_role=False, scp_role=True)
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])  # C-MOVE: to the destination
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self._on_find), (evt.EVT_C_GET, self._on_get), (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_DIMSE_RECV, self._on_dimse_recv)])
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        self.hold_after = None
        self.release.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    def __enter__(self) -> ScriptedPacs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    # -- handlers ---------------------------------------------------------------------------------------

    def _on_dimse_recv(self, event: Any) -> None:
        """Our side's answer to each C-STORE sub-operation (on the C-GET association or the C-MOVE's)."""
        command = event.message.command_set
        if int(command.CommandField) == C_STORE_RSP:
            with self._lock:
                self.store_status.setdefault(str(command.AffectedSOPInstanceUID), []).append(int(command.Status))

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        level = LEVELS.get(str(identifier.get("QueryRetrieveLevel", "")))
        if level is None:
            yield 0xC000, None
            return
        asked = {e.keyword: _text(e.value) for e in identifier if e.keyword and e.keyword not in _NOT_KEYS}
        if level == "instance" and not self.answer_image_level:
            return
        filters = {k: v for k, v in asked.items() if v}
        for row in self.rows(level, filters, asked):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            answer = Dataset()
            answer.QueryRetrieveLevel = identifier.QueryRetrieveLevel
            for keyword, text in row.items():
                setattr(answer, keyword, text)
            yield 0xFF00, answer

    def _covered(self, identifier: Dataset) -> tuple[str, list[_Instance]]:
        level = LEVELS.get(str(identifier.get("QueryRetrieveLevel", "")), "")
        sop = identifier.get("SOPInstanceUID") if level == "instance" else None
        uids = None if sop is None else [str(u) for u in (sop if isinstance(sop, (list, tuple)) or
                                                           type(sop).__name__ == "MultiValue" else [sop])]
        return level, self._select(str(identifier.get("StudyInstanceUID", "")),
                                   str(identifier.get("SeriesInstanceUID", "") or ""), uids)

    def _send(self, event: Any, plan: list[tuple[_Instance, bool]]) -> Iterator[tuple[int, Dataset | None]]:
        for instance, served in plan:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            if not self._gate(instance, served) or not event.assoc.is_established:
                return
            self._sent(instance, served)
            yield 0xFF00, instance.ds

    def _on_get(self, event: Any) -> Iterator[Any]:
        level, served = self._covered(event.identifier)
        self._note_request("C-GET", level, [i.uid for i in served])
        plan = self._plan(level, served)
        yield len(plan)
        yield from self._send(event, plan)

    def _on_move(self, event: Any) -> Iterator[Any]:
        destination = self.move_destinations.get(str(event.move_destination or "").strip())
        if destination is None:
            yield None, None
            return
        level, served = self._covered(event.identifier)
        self._note_request("C-MOVE", level, [i.uid for i in served])
        plan = self._plan(level, served)
        yield destination[0], destination[1], {"evt_handlers": [(evt.EVT_DIMSE_RECV, self._on_dimse_recv)]}
        yield len(plan)
        if self.before_move is not None:
            self.before_move()
        yield from self._send(event, plan)


# -- DICOMweb ---------------------------------------------------------------------------------------------------


def _json_item(row: Mapping[str, str]) -> dict[str, Any]:
    """A ``{keyword: text}`` row as a DICOM JSON object (PS3.18 F.2)."""
    item: dict[str, Any] = {}
    for keyword, text in row.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = dictionary_VR(keyword)
        element: dict[str, Any] = {"vr": vr}
        if text != "":
            values = text.split("\\")
            if vr == "PN":
                element["Value"] = [{"Alphabetic": v} for v in values]
            elif vr in ("IS", "US", "UL", "SS", "SL"):
                element["Value"] = [int(v) for v in values]
            elif vr in ("DS", "FL", "FD"):
                element["Value"] = [float(v) for v in values]
            else:
                element["Value"] = values
        item[f"{tag:08X}"] = element
    return item


class ScriptedWado(_Script):
    """QIDO-RS and WADO-RS on 127.0.0.1 for `datasets` (see the module docstring); :attr:`url` is the base."""

    def __init__(self, datasets: Iterable[Dataset], *, slip: Iterable[Dataset] = (),
                 slip_levels: Iterable[str] = ("study", "series", "instance"), hold_after: int | None = None) -> None:
        super().__init__(datasets, slip=slip, slip_levels=slip_levels, hold_after=hold_after)
        self.http_requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> ScriptedWado:
        script = self

        class Handler(_WadoHandler):
            peer = script

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        return self

    def stop(self) -> None:
        self.hold_after = None
        self.release.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> ScriptedWado:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _WadoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peer: ScriptedWado

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        peer = self.peer
        split = urlsplit(self.path)
        with peer._lock:
            peer.http_requests.append(self.path)
        parts = [unquote(p) for p in split.path.split("/") if p]
        if parts[:1] != ["dicom-web"]:
            return self._answer(404, "text/plain", b"not here")
        parts = parts[1:]
        params = parse_qsl(split.query, keep_blank_values=True)
        filters = {k: v for k, v in params if k.lower() not in _QIDO_CONTROL and v}
        if parts == ["studies"]:
            return self._qido("study", filters)
        if len(parts) == 3 and parts[0] == "studies" and parts[2] in ("series", "instances"):
            level = "series" if parts[2] == "series" else "instance"
            return self._qido(level, {**filters, "StudyInstanceUID": parts[1]})
        if len(parts) == 5 and parts[0] == "studies" and parts[2] == "series" and parts[4] == "instances":
            return self._qido("instance", {**filters, "StudyInstanceUID": parts[1], "SeriesInstanceUID": parts[3]})
        if len(parts) == 2 and parts[0] == "studies":
            return self._wado("study", peer._select(parts[1]))
        if len(parts) == 4 and parts[0] == "studies" and parts[2] == "series":
            return self._wado("series", peer._select(parts[1], parts[3]))
        if len(parts) == 6 and parts[0] == "studies" and parts[2] == "series" and parts[4] == "instances":
            return self._wado("instance", peer._select(parts[1], parts[3], [parts[5]]))
        return self._answer(404, "text/plain", b"unknown resource")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _qido(self, level: str, filters: Mapping[str, str]) -> None:
        rows = self.peer.rows(level, filters, QIDO_KEYS[level])
        if not rows:
            return self._answer(204 if level != "study" else 200, "application/dicom+json", b"" if level != "study"
                                else b"[]")
        return self._answer(200, "application/dicom+json", json.dumps([_json_item(r) for r in rows]).encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _wado(self, level: str, served: list[_Instance]) -> None:
        peer = self.peer
        if not served:
            return self._answer(404, "text/plain", b"no such study, series or instance")
        peer._note_request("WADO-RS", level, [i.uid for i in served])
        boundary = uuid.uuid4().hex
        delimiter = f"--{boundary}".encode()
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            # Each part ends with the next delimiter, so that the client can finish it before the peer holds.
            self._chunk(delimiter)
            for instance, is_served in peer._plan(level, served):
                if not peer._gate(instance, is_served):
                    return
                self._chunk(b"\r\nContent-Type: application/dicom\r\n\r\n" + instance.data + b"\r\n" + delimiter)
                peer._sent(instance, is_served)
            self._chunk(b"--\r\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away (killed, or it gave up)
            return


# -- a third party ----------------------------------------------------------------------------------------------


def third_party_store(port: int, datasets: Iterable[Dataset], *, calling_ae: str, called_ae: str = "ANYSCP",
                      source_address: str = "127.0.0.1", host: str = "127.0.0.1") -> list[int]:
    """C-STORE `datasets` to `host`:`port` as `calling_ae` from `source_address` (any 127.0.0.0/8 address works
    on loopback); the status of each (-1: no status came back).  Raises AssertionError when the association
    itself is not accepted."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class in STORE_SOP_CLASSES:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title=called_ae, bind_address=(source_address, 0))
    if not assoc.is_established:
        raise AssertionError(f"the third party's association to {host}:{port} was not accepted")
    statuses = []
    try:
        for ds in datasets:
            ds = pydicom.dcmread(io.BytesIO(_part10(ds)))
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if "Status" in status else -1)
    finally:
        assoc.release()
    return statuses


# -- raw-socket peers (for what no DICOM library would send) -----------------------------------------------------


def serve_once(script: Callable[[socket.socket], None]) -> tuple[socket.socket, threading.Thread]:
    """A one-connection TCP peer on 127.0.0.1 running `script(conn)`; (its listening socket, its thread)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)

    def serve() -> None:
        try:
            conn = server.accept()[0]
        except OSError:
            return
        with conn:
            try:
                script(conn)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def read_pdu(conn: socket.socket) -> tuple[int, bytes]:
    """One whole PDU from `conn`: (type, body)."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionResetError("closed")
            data += chunk
        return data

    pdu_type, _, length = struct.unpack(">BBL", exactly(6))
    return pdu_type, exactly(length)


def accept_first_context(conn: socket.socket, calling_ae: str) -> None:
    """Read the A-ASSOCIATE-RQ and accept its context 1 with Implicit VR Little Endian (PS3.8 9.3.3)."""
    read_pdu(conn)
    ts = struct.pack(">BBH", 0x40, 0, len(ImplicitVRLittleEndian)) + ImplicitVRLittleEndian.encode()
    context = struct.pack(">BBHBBBB", 0x21, 0, 4 + len(ts), 1, 0, 0, 0) + ts
    user = struct.pack(">BBHL", 0x51, 0, 4, 16384)
    app = APPLICATION_CONTEXT_NAME.encode()
    body = (struct.pack(">HH", 1, 0) + b"ANYSCP".ljust(16) + calling_ae.encode().ljust(16) + bytes(32)
            + struct.pack(">BBH", 0x10, 0, len(app)) + app + context + struct.pack(">BBH", 0x50, 0, len(user)) + user)
    conn.sendall(struct.pack(">BBL", 0x02, 0, len(body)) + body)


def hold(conn: socket.socket, seconds: float = 3.0) -> None:
    """Read and drop whatever comes, for `seconds` at most: a peer that never answers."""
    conn.settimeout(seconds)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
