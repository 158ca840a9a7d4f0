"""JSON from outside nests at most JSON_DEPTH_MAX levels: a hostile answer or file is a sentence, never a
RecursionError (issue 12: a QIDO answer of deeply nested JSON ended in "internal error: RecursionError")."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from viewer.errors import DicomWebError
from viewer.json_input import JSON_DEPTH_MAX, JsonTooDeep, parse_json
from viewer.pacs.dicomweb import DicomWebClient
from viewer.settings import load_settings


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_limit() -> None:
    assert parse_json(nested(JSON_DEPTH_MAX)) is not None
    for depth in (JSON_DEPTH_MAX + 1, 5_000, 200_000):  # the last is past the C parser's own recursion limit
        with pytest.raises(JsonTooDeep, match=f"deeper than {JSON_DEPTH_MAX} levels"):
            parse_json(nested(depth))
    with pytest.raises(JsonTooDeep):  # objects count as lists do
        parse_json('{"a":' * (JSON_DEPTH_MAX + 1) + "1" + "}" * (JSON_DEPTH_MAX + 1))
    with pytest.raises(ValueError):
        parse_json(b"not json")


@pytest.fixture
def hostile_qido() -> Iterator[str]:
    """A real HTTP server on loopback whose every search answer nests 100,000 levels deep."""
    body = nested(100_000).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_deeply_nested_search_answer_is_a_sentence(hostile_qido: str) -> None:
    with pytest.raises(DicomWebError, match=f"search answer we do not read: it nests deeper than {JSON_DEPTH_MAX}"):
        DicomWebClient(hostile_qido).qido("study", {})


def test_a_deeply_nested_settings_file_gives_the_defaults_and_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"nodes": ' + nested(JSON_DEPTH_MAX + 5) + "}", encoding="utf-8")
    settings = load_settings(path, system_path=None)
    assert settings.nodes == [] or settings.nodes == ()
    assert any("damaged" in w for w in settings.warnings)


def test_too_many_values_are_refused_before_parsing() -> None:
    """64 MiB of "{}," would parse to more than a gigabyte; it is refused from its text, and a large but sane
    document (a 10,000-match answer's worth of values) is not."""
    from viewer.json_input import JSON_VALUES_MAX, JsonTooLarge

    hostile = b"[" + b"{}," * (JSON_VALUES_MAX + 1) + b"{}]"
    with pytest.raises(JsonTooLarge, match="more than 4,000,000 values"):
        parse_json(hostile)
    sane = "[" + ",".join('{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}' for _ in range(10_000)) + "]"
    assert len(parse_json(sane)) == 10_000
