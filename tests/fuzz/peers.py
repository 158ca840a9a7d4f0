"""Hostile peers: a raw-socket DIMSE peer (tests.pacs.scripted.serve_once) for the lean C-FIND and C-GET, and an HTTP
server with hostile DICOMweb answers.  Each case starts its peer in this (the test's) process; the client runs in
the watched worker."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fuzz.harness import Case
from tests.pacs.scripted import accept_first_context, hold, read_pdu, serve_once
from viewer.pacs import pdu
from viewer.pacs.fastfind import STUDY_ROOT_FIND

Script = Callable[[socket.socket], None]
PACING_S = 0.2  # a trickling peer's pace (the peer's behaviour, not a synchronisation)


def _accept(conn: socket.socket) -> None:
    accept_first_context(conn, "MIFASTEST")


def _request(conn: socket.socket) -> None:
    """Read what the client sends after the association (its request), without caring how many PDUs."""
    conn.settimeout(0.5)
    try:
        read_pdu(conn)
        read_pdu(conn)
    except OSError:
        pass
    conn.settimeout(None)


def _find_rsp(status: int, identifier: bytes | None) -> bytes:
    command = pdu.encode_command({
        pdu.CommandTag.AFFECTED_SOP_CLASS_UID: STUDY_ROOT_FIND,
        pdu.CommandTag.COMMAND_FIELD: pdu.CommandField.C_FIND_RSP,
        pdu.CommandTag.MESSAGE_ID_BEING_RESPONDED_TO: 1,
        pdu.CommandTag.COMMAND_DATA_SET_TYPE: 0x0101 if identifier is None else 0x0000,
        pdu.CommandTag.STATUS: status,
    })
    out = b"".join(pdu.encode_p_data(1, True, command, 16384))
    if identifier is not None:
        out += b"".join(pdu.encode_p_data(1, False, identifier, 16384))
    return out


def _identifier(name: bytes = b"FUZZ^CASE") -> bytes:
    """Implicit VR LE: Query/Retrieve Level, Patient's Name, Study Instance UID."""
    def element(group: int, elem: int, value: bytes) -> bytes:
        value += b" " * (len(value) % 2)
        return struct.pack("<HHL", group, elem, len(value)) + value
    return (element(0x0008, 0x0052, b"STUDY") + element(0x0010, 0x0010, name)
            + element(0x0020, 0x000D, b"1.2.826.0.1.3680043.8.498.1"))


def _answer(data: bytes) -> Script:
    def script(conn: socket.socket) -> None:
        _accept(conn)
        _request(conn)
        conn.sendall(data)
        hold(conn, 2.0)
    return script


def _before_association(data: bytes) -> Script:
    def script(conn: socket.socket) -> None:
        read_pdu(conn)
        conn.sendall(data)
        hold(conn, 2.0)
    return script


def _trickle(data: bytes) -> Script:
    """Accept, then send `data` a byte at a time, for as long as the client listens."""
    def script(conn: socket.socket) -> None:
        _accept(conn)
        _request(conn)
        pace = threading.Event()
        for byte in data:
            conn.sendall(bytes([byte]))
            pace.wait(PACING_S)
    return script


def _flood(conn: socket.socket) -> None:
    """Accept, then answer the C-FIND with matches for ever (until the client cancels, aborts or leaves)."""
    _accept(conn)
    _request(conn)
    match = _find_rsp(0xFF00, _identifier())
    try:
        for _ in range(1_000_000):
            conn.sendall(match)
    except OSError:
        pass


def _valid_answer() -> bytes:
    return _find_rsp(0xFF00, _identifier()) + _find_rsp(0x0000, None)


def dimse_catalogue() -> Iterator[tuple[str, Script]]:
    huge = 0xFFFFFFF0
    yield "A-ASSOCIATE-AC claiming 4 GiB", _before_association(pdu.PDU_HEADER.pack(0x02, 0, huge) + bytes(64))
    yield "unknown PDU type claiming 4 GiB", _before_association(pdu.PDU_HEADER.pack(0x99, 0, huge) + bytes(64))
    yield "garbage instead of an association answer", _before_association(bytes(range(256)) * 4)
    yield "A-ASSOCIATE-AC with items overrunning it", \
        _before_association(pdu.PDU_HEADER.pack(0x02, 0, 80) + struct.pack(">HH", 1, 0) + bytes(64)
                            + struct.pack(">BBH", 0x21, 0, 0xFFFF) + bytes(8))
    yield "P-DATA-TF claiming 4 GiB", _answer(pdu.PDU_HEADER.pack(pdu.PduType.P_DATA_TF, 0, huge) + bytes(4096))
    yield "PDV longer than its PDU", _answer(pdu.PDU_HEADER.pack(pdu.PduType.P_DATA_TF, 0, 10)
                                             + pdu.PDV_HEADER.pack(0x7FFFFFFF, 1, 3) + bytes(4))
    yield "PDV of length 0", _answer(pdu.PDU_HEADER.pack(pdu.PduType.P_DATA_TF, 0, 4) + struct.pack(">L", 0))
    yield "PDV on an unknown context", _answer(b"".join(pdu.encode_p_data(77, True, bytes(40), 16384)))
    yield "command set of garbage", _answer(b"".join(pdu.encode_p_data(1, True, bytes(range(200)), 16384)))
    yield "identifier of garbage", _answer(_find_rsp(0xFF00, bytes(range(256)) * 3) + _find_rsp(0, None))
    yield "identifier with an element claiming 4 GiB", \
        _answer(_find_rsp(0xFF00, struct.pack("<HHL", 0x0010, 0x0010, huge) + b"AB") + _find_rsp(0, None))
    yield "unknown status", _answer(_find_rsp(0x1234, None))
    yield "A-RELEASE-RQ instead of an answer", _answer(pdu.encode_release_rq())
    yield "A-ABORT with an unknown reason", _answer(pdu.encode_abort(7, 99))
    yield "answer trickling in a byte at a time", _trickle(_valid_answer() * 50)
    yield "C-FIND answering for ever", _flood


def dimse_random(rng: random.Random) -> Iterator[tuple[str, Script]]:
    valid = _valid_answer()
    for n in range(1_000_000):
        damaged = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.3:
            del damaged[rng.randrange(len(damaged)):]
        yield f"random #{n}", _answer(bytes(damaged))


# Hostile callers of our C-MOVE Storage SCP (the worker runs the SCP and plays the caller): what each sends first.
SCP_CATALOGUE: dict[str, bytes] = {
    "A-ASSOCIATE-RQ claiming 4 GiB, then 1.2 GiB of it": pdu.PDU_HEADER.pack(0x01, 0, 0xFFFFFFF0),
    "unknown PDU claiming 4 GiB": pdu.PDU_HEADER.pack(0x99, 0, 0xFFFFFFF0),
    "garbage instead of an association request": bytes(range(256)) * 16,
}


def scp_cases() -> Iterator[Case]:
    for name, first in SCP_CATALOGUE.items():
        yield Case(f"Storage SCP: {name}", lambda first=first: {"op": "scp", "first": first.hex()}, lambda: None)


def dimse_cases(pairs: Iterator[tuple[str, Script]], ops: tuple[str, ...] = ("find", "get")) -> Iterator[Case]:
    for name, script in pairs:
        for op in ops:
            if op == "get" and name.startswith(("answer trickling", "C-FIND answering")):
                continue  # the same transport as the C-FIND's; budget spared
            servers: list[socket.socket] = []

            def prepare(script: Script = script, op: str = op, servers: list[socket.socket] = servers) -> dict:
                server, _ = serve_once(script)
                servers.append(server)
                return {"op": op, "port": server.getsockname()[1]}

            def close(servers: list[socket.socket] = servers) -> None:
                for server in servers:
                    server.close()

            yield Case(f"DIMSE {op}: {name}", prepare, close)


# -- DICOMweb ------------------------------------------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _multipart(parts: list[bytes], boundary: bytes = b"b0und") -> bytes:
    return b"".join(b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary + b"--\r\n"


WEB_ANSWERS: dict[str, tuple[str, bytes, str]] = {  # case: (content type, body, how it is sent)
    "deeply nested JSON": ("application/dicom+json", _nested(200_000), "length"),
    "oversized JSON (80 MiB)": ("application/dicom+json", b"[" + b'{"00100010":{"vr":"PN"}},' * (80 << 15) + b"{}]",
                                "chunked"),
    "JSON of the wrong shape": ("application/dicom+json", b'{"a": [1, 2, {"b": null}]}', "length"),
    "JSON with wrong value types": ("application/dicom+json",
                                    json.dumps([{"0020000D": {"vr": "UI", "Value": [{"x": 1}, 3.5, None]},
                                                 "00100010": {"vr": "PN", "Value": [7]},
                                                 "00201208": {"vr": "IS", "Value": ["x" * 100_000]}}]).encode(),
                                    "length"),
    "JSON not UTF-8": ("application/dicom+json", b'[{"00100010": {"vr": "PN", "Value": ["\xff\xfe"]}}]', "length"),
    "body shorter than its Content-Length": ("application/dicom+json", b"[{}", "short"),
    "broken chunked encoding": ("application/dicom+json", b"[]", "badchunk"),
    "multipart without a boundary": ("multipart/related; type=\"application/dicom\"", _multipart([b"x"]), "length"),
    "multipart whose boundary never comes": ('multipart/related; type="application/dicom"; boundary=b0und',
                                             b"--b0und\r\n\r\n" + bytes(3 << 20), "chunked"),
    "multipart of 100000 empty parts": ('multipart/related; type="application/dicom"; boundary=b0und',
                                        _multipart([b""] * 100_000), "chunked"),
    "multipart with garbage parts": ('multipart/related; type="application/dicom"; boundary=b0und',
                                     _multipart([bytes(range(256)) * 8, b"DICM" * 100]), "chunked"),
    "multipart part headers never ending": ('multipart/related; type="application/dicom"; boundary=b0und',
                                            b"--b0und\r\n" + b"X-A: b\r\n" * 200_000, "chunked"),
    "multipart nested": ('multipart/related; type="application/dicom"; boundary=b0und',
                         _multipart([b"--b0und\r\n" * 1000]), "chunked"),
    "HTML error page with 200": ("text/html", b"<html>" + b"<div>" * 10_000, "length"),
    # A part's own Content-Type with a line break, quoted in the error (found by seed 20261207): it must not
    # forge a second line in the message or the log.
    "multipart part typed with a line break": ('multipart/related; type="application/dicom"; boundary=b0und',
                                               b"--b0und\r\nContent-Type: applicatio\n/dicom\r\n\r\nnot dicom"
                                               b"\r\n--b0und--\r\n", "length"),
}


class _HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        case = self.path.split("/")[2] if self.path.startswith("/case/") else ""
        content_type, body, how = WEB_ANSWERS.get(_CASES.get(case, ""), ("text/plain", b"?", "length"))
        if "/studies/" in self.path and "/series/" in self.path and "/instances" not in self.path \
                and content_type.startswith("application/dicom+json"):
            content_type = 'multipart/related; type="application/dicom"; boundary=b0und'  # a retrieval asked
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            if how == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for at in range(0, len(body), 1 << 16):
                    piece = body[at: at + (1 << 16)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            elif how == "badchunk":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"zz\r\n" + body + b"\r\n")
            elif how == "short":
                self.send_header("Content-Length", str(len(body) + 1000))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


_CASES: dict[str, str] = {}  # URL key -> case name


class WebServer:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def web_cases(server: WebServer, names: list[str]) -> Iterator[Case]:
    for name in names:
        key = f"c{len(_CASES)}"
        _CASES[key] = name
        for op in ("qido", "wado"):
            url = f"http://127.0.0.1:{server.port}/case/{key}/dicom-web"
            yield Case(f"DICOMweb {op}: {name}", lambda op=op, url=url: {"op": op, "url": url})


def web_random(server: WebServer, rng: random.Random) -> Iterator[Case]:
    """Random damage to a valid QIDO answer and a valid multipart retrieval."""
    valid_json = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.1"]},
                              "00100010": {"vr": "PN", "Value": [{"Alphabetic": "FUZZ^CASE"}]}}]).encode()
    valid_multi = _multipart([b"\0" * 128 + b"DICM" + bytes(200)])
    for n in range(1_000_000):
        name = f"random #{n}"
        base, ctype = ((valid_json, "application/dicom+json") if n % 2 == 0 else
                       (valid_multi, 'multipart/related; type="application/dicom"; boundary=b0und'))
        damaged = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        WEB_ANSWERS[name] = (ctype, bytes(damaged), "length")
        yield from web_cases(server, [name])
