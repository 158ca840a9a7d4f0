"""A ``multipart/related`` body (RFC 2046 5.1, as WADO-RS sends instances: PS3.18 8.7.1) read part by part from a
stream of chunks, with every length bounded (viewer.limits): the preamble, a part's headers, a part."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from viewer.errors import DicomWebError
from viewer.limits import PART_BYTES_MAX, PART_HEADERS_BYTES_MAX, PREAMBLE_BYTES_MAX


class MultipartReader:
    """Parse a ``multipart/related`` body from an iterator of byte chunks, yielding ``(headers, body)`` per part.

    At most one part plus one chunk is buffered.  Anything that is not a well-formed multipart body with the
    announced boundary (no boundary found, a part without its closing delimiter, a part over
    `part_bytes_max`) raises :class:`~viewer.errors.DicomWebError`.
    """

    def __init__(self, chunks: Iterator[bytes], boundary: str, *, part_bytes_max: int = PART_BYTES_MAX,
                 where: str = "the DICOMweb server") -> None:
        if not boundary or len(boundary) > 70:  # RFC 2046 5.1.1: 1-70 characters
            raise DicomWebError(f"{where} sent a multipart answer with an invalid boundary.")
        self._chunks = chunks
        self._delimiter = b"--" + boundary.encode("latin-1")
        self._part_bytes_max = part_bytes_max
        self._where = where
        self._buf = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        """Read one more chunk; False at the end of the stream."""
        if self._eof:
            return False
        for chunk in self._chunks:
            if chunk:
                self._buf += chunk
                return True
        self._eof = True
        return False

    def _garbage(self, what: str, *, cut: bool = False) -> DicomWebError:
        """`cut`: the answer stopped in the middle (the server died, the connection closed): a transport
        failure worth another try, not a server that misunderstood us."""
        return DicomWebError(f"{self._where} sent a damaged multipart answer ({what}).", transient=cut or None)

    def __iter__(self) -> Iterator[tuple[dict[str, str], bytes]]:
        delimiter = self._delimiter
        # Preamble: everything up to the first delimiter.
        while (at := self._buf.find(delimiter)) < 0:
            if len(self._buf) > PREAMBLE_BYTES_MAX or not self._fill():
                raise self._garbage("the announced boundary never appears")
        del self._buf[:at]
        while True:
            # The buffer starts with a delimiter: "--" means the close delimiter, else headers follow.
            while len(self._buf) < len(delimiter) + 2:
                if not self._fill():
                    raise self._garbage("it ends inside a boundary", cut=True)
            if self._buf[len(delimiter):len(delimiter) + 2] == b"--":
                return
            while (end := self._buf.find(b"\r\n\r\n")) < 0:
                if len(self._buf) > PART_HEADERS_BYTES_MAX or not self._fill():
                    raise self._garbage("part headers are missing or too long")
            headers = self._parse_headers(bytes(self._buf[len(delimiter):end]))
            del self._buf[:end + 4]
            yield headers, self._read_body(headers)

    def _parse_headers(self, block: bytes) -> dict[str, str]:
        lines = block.split(b"\r\n")
        if lines[0].strip(b" \t"):  # transport padding only may follow the delimiter (RFC 2046 5.1.1)
            raise self._garbage("text after a boundary")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise self._garbage("a malformed part header")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        return headers

    def _read_body(self, headers: Mapping[str, str]) -> bytes:
        marker = b"\r\n" + self._delimiter
        length_text = headers.get("content-length", "")
        if length_text.isdigit():
            length = int(length_text)
            if length > self._part_bytes_max:
                raise self._garbage(f"a part of {length} bytes exceeds the limit of {self._part_bytes_max}")
            while len(self._buf) < length + len(marker):
                if not self._fill():
                    raise self._garbage("it was cut off inside a part", cut=True)
            if self._buf[length:length + len(marker)] != marker:
                raise self._garbage("a part's length does not match its boundary")
            end = length
        else:
            searched = 0
            while (end := self._buf.find(marker, searched)) < 0:
                searched = max(0, len(self._buf) - len(marker) + 1)
                if len(self._buf) > self._part_bytes_max:
                    raise self._garbage(f"a part exceeds the limit of {self._part_bytes_max} bytes")
                if not self._fill():
                    raise self._garbage("it was cut off inside a part", cut=True)
            if end > self._part_bytes_max:
                raise self._garbage(f"a part exceeds the limit of {self._part_bytes_max} bytes")
        with memoryview(self._buf) as view:
            body = bytes(view[:end])  # one copy; the view is released before the buffer shrinks
        del self._buf[:end + 2]  # keep the delimiter at the front for the next round
        return body


def boundary_of(content_type: str) -> str | None:
    """The boundary a Content-Type announces, None without one."""
    match = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', content_type, re.IGNORECASE)
    return (match.group(1) or match.group(2)) if match else None
