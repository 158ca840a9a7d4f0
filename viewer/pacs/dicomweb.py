"""DICOMweb transport (PS3.18) with requests: QIDO-RS queries and WADO-RS retrieval.

WADO-RS answers a study, series or instance as ``multipart/related; type="application/dicom"`` (PS3.18
8.7.3.3.2, RFC 2046).  :class:`MultipartReader` parses that stream as it arrives, one part at a time, with
bounded buffers: a study is never held in memory, only the instance being received.  We ask for
``transfer-syntax=*`` (PS3.18 8.7.3.5.2) so the server sends each instance as stored, without transcoding.

Errors are translated here, once: no connection -> NodeUnreachableError, silence -> PacsTimeoutError, an
HTTP error status or a body we cannot parse -> DicomWebError naming what was wrong.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import requests
from pydicom.datadict import keyword_for_tag

from viewer.errors import (
    DicomWebError,
    NodeUnreachableError,
    OperationCancelled,
    PacsTimeoutError,
)
from viewer.json_input import JsonRefused, parse_json
from viewer.library.store import is_valid_uid
from viewer.limits import (
    FIND_RESULTS_LIMIT_MAX,
    FIND_RESULTS_MAX,
    PARTS_PER_ANSWER_MAX,
    QIDO_BYTES_MAX,
    SHOWN_CHARS_MAX,
)
from viewer.pacs import webauth
from viewer.pacs.multipart import MultipartReader, boundary_of
from viewer.pacs.node import (
    DEFAULT_RETURN_KEYS,
    AnyEvent,
    Node,
    Progress,
    RetrieveResult,
    Sink,
    Timeouts,
    check_level,
    validate_url,
    without_secrets,
)
from viewer.pacs.sink import InstanceSink

log = logging.getLogger(__name__)


class _WithoutQueries(logging.Filter):
    """urllib3 logs every request's path with its query string at DEBUG ('"GET /studies?PatientName=..." 200'):
    a search's patient attributes in any log that turns DEBUG on.  This filter takes them out of its records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(without_secrets(a) if isinstance(a, str) and ("?" in a or "@" in a) else a
                                for a in record.args)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_WithoutQueries())

CHUNK_BYTES = 1 << 20  # one read from the HTTP stream
PARALLEL_REQUESTS = 4  # instance requests in flight at once when retrieving a list of instances
SERIES_REQUEST_MIN = 8  # a list this long, and at least half its series, is fetched as the whole series
ERROR_BODY_CHARS = 200  # of an error page, quoted in a message
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_JSON = "application/dicom+json, application/json;q=0.9"
PN_VR = "PN"


def _part10_ok(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


# Characters of DICOM matching values sent as they are (PS3.18 8.3.4: wildcards "*" "?", ranges "-", PN "^",
# UID lists "\\").  Orthanc's DICOMweb plugin (1.7) does not decode percent-escapes in query values, so
# "Test%5EPhan%2A" would match nothing; RFC 3986 allows "*" "-" "?" in a query, and servers accept "^" "\\".
_QUERY_SAFE = "*?-^\\.,:@_~!$'()/"


def query_string(params: Sequence[tuple[str, str]]) -> str:
    """``key=value&...`` with only the characters that would break the query percent-encoded."""
    return "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe=_QUERY_SAFE)}" for k, v in params)


def _json_value_to_text(vr: str, values: list[Any]) -> str:
    texts = []
    for value in values:
        if value is None:
            texts.append("")
        elif vr == PN_VR and isinstance(value, Mapping):  # PS3.18 F.2.2: {"Alphabetic": ..., "Ideographic": ...}
            groups = [value.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            while groups and not groups[-1]:
                groups.pop()
            texts.append("=".join(groups))
        elif isinstance(value, float) and value.is_integer():
            texts.append(str(int(value)))
        else:
            texts.append(str(value))
    return "\\".join(texts)


def dicom_json_to_dict(item: Mapping[str, Any]) -> dict[str, str]:
    """One DICOM JSON object (PS3.18 Annex F) as ``{keyword: text}``, like a C-FIND result.  Sequences,
    bulk data and private tags are left out."""
    result: dict[str, str] = {}
    for tag_text, element in item.items():
        try:
            keyword = keyword_for_tag(int(tag_text, 16))
        except (TypeError, ValueError):
            continue
        if not keyword or not isinstance(element, Mapping):
            continue
        vr = str(element.get("vr", ""))
        if vr == "SQ" or "BulkDataURI" in element or "InlineBinary" in element:
            continue
        values = element.get("Value", [])
        result[keyword] = _json_value_to_text(vr, values if isinstance(values, list) else [values])
    return result


class DicomWebClient:
    """QIDO-RS, WADO-RS and STOW-RS against one DICOMweb base URL (e.g. ``http://host:8042/dicom-web``)."""

    def __init__(
        self,
        base_url: str,
        timeouts: Timeouts | None = None,
        session: requests.Session | None = None,
        *,
        node: Node | None = None,
        auth_handler: object | None = None,
    ) -> None:
        self.base_url = validate_url(base_url)
        self.timeouts = timeouts or (node.timeouts if node else Timeouts())
        self.node = node
        self._session = session or requests.Session()
        # Signing in and HTTPS trust (viewer.pacs.webauth): the node's `auth`, one handler per node for the process
        # (`auth_handler` replaces it: tests give one with their own clock).
        self._auth_config = node.auth if node is not None else None
        self._auth = auth_handler if auth_handler is not None else webauth.handler_for(self._auth_config,
                                                                                      self.timeouts)
        verify, self._cert = webauth.https_settings(self._auth_config)
        self._verify = verify if self._auth_config is not None and self._auth_config.ca_file else None
        if self._session.verify is True:
            self._session.verify = verify  # the system's CA store, not only certifi's (REQUESTS_CA_BUNDLE wins)

    def __repr__(self) -> str:
        return f"DicomWebClient({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _get(self, path: str, *, accept: str, params: Sequence[tuple[str, str]] = (),
             stream: bool = False, method: str = "GET", body: bytes | None = None,
             content_type: str = "") -> requests.Response:
        url = f"{self.base_url}{path}" + (f"?{query_string(params)}" if params else "")
        headers = {"Accept": accept} | ({"Content-Type": content_type} if content_type else {})
        try:
            prepared = self._session.prepare_request(requests.Request(method, url, headers=headers, data=body,
                                                                      auth=self._auth or webauth.NO_SIGN_IN))
            prepared.url = url  # as we encoded it: requests would percent-encode "^" and "\\" again
            settings = self._session.merge_environment_settings(url, {}, stream, self._verify, self._cert)
            response = self._session.send(prepared, timeout=(self.timeouts.connect_s, self.timeouts.dimse_s),
                                          **settings)
        # The requests exceptions' texts carry the URL with its query string (the patient's name and birth date
        # of a search): our sentences take what they need of them (_reason), and the chain is cut (from None).
        except requests.exceptions.SSLError as exc:
            raise webauth.tls_failure(f"The DICOMweb server at {self.base_url}", exc, self._auth_config) from None
        except requests.ConnectTimeout:
            raise NodeUnreachableError(
                f"The DICOMweb server at {self.base_url} did not answer within {self.timeouts.connect_s:g} s "
                "(host down or port blocked).") from None
        except requests.ReadTimeout:
            raise PacsTimeoutError(
                f"The DICOMweb server at {self.base_url} stopped answering: nothing received for "
                f"{self.timeouts.dimse_s:g} s.") from None
        except requests.ConnectionError as exc:
            raise NodeUnreachableError(
                f"The DICOMweb server at {self.base_url} cannot be reached ({_reason(exc)}).") from None
        except requests.RequestException as exc:
            raise DicomWebError(f"The request to the DICOMweb server at {self.base_url} failed ({_reason(exc)}).",
                                transient=True) from None
        if response.status_code in (401, 403):
            response.close()
            raise webauth.refused(f"The DICOMweb server at {self.base_url}", response.status_code, self._auth_config,
                                  self._auth)
        if response.status_code >= 400:
            response.close()  # its body may echo the query (patient data): the status says enough
            raise DicomWebError(
                f"The DICOMweb server at {self.base_url} answered HTTP {response.status_code} "
                f"{response.reason or ''}".rstrip() + ".", http_status=response.status_code)
        return response

    # -- QIDO-RS (PS3.18 10.6) ----------------------------------------------------------------------------

    def echo(self) -> float:
        """Check the server answers QIDO-RS; return the round trip in seconds."""
        started = time.perf_counter()
        self._get("/studies", accept=ACCEPT_JSON, params=[("limit", "1")]).close()
        return time.perf_counter() - started

    def qido(
        self,
        level: str,
        keys: Mapping[str, str] | None = None,
        *,
        cancel: threading.Event | None = None,
        limit: int = FIND_RESULTS_MAX,
    ) -> list[dict[str, str]]:
        """Search for studies, series or instances; results are ``{keyword: text}`` like ``find()``'s.

        ``StudyInstanceUID`` (and ``SeriesInstanceUID`` for instances) in `keys` select the resource path
        (``/studies/{uid}/series``); the other keys become query parameters.  QIDO-RS has no patient level.
        """
        if check_level(level) == "patient":
            raise DicomWebError("QIDO-RS has no patient level; search for studies instead.")
        if not 1 <= limit <= FIND_RESULTS_LIMIT_MAX:
            raise ValueError(f"limit must be between 1 and {FIND_RESULTS_LIMIT_MAX}")
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("The search was cancelled.")
        keys = dict(keys or {})
        study = keys.pop("StudyInstanceUID", "") if level in ("series", "image") else ""
        series = keys.pop("SeriesInstanceUID", "") if level == "image" and study else ""
        for label, uid in (("Study Instance UID", study), ("Series Instance UID", series)):
            if uid and not is_valid_uid(uid):
                raise DicomWebError(f"'{uid}' is not a valid {label}.")
        path = {"study": "/studies", "series": "/series", "image": "/instances"}[level]
        if series:
            path = f"/studies/{study}/series/{series}/instances"
        elif study:
            path = f"/studies/{study}{path}"
        params: list[tuple[str, str]] = [(k, v) for k, v in keys.items() if v != ""]
        params += [("includefield", k) for k in DEFAULT_RETURN_KEYS[level] if k not in keys or keys[k] == ""]
        params.append(("limit", str(limit)))
        response = self._get(path, accept=ACCEPT_JSON, params=params, stream=True)
        try:
            if response.status_code == 204:
                return []
            body = _read_bounded(response, QIDO_BYTES_MAX, self.base_url)
        finally:
            response.close()
        if not body.strip():
            return []
        try:
            items = parse_json(body)
        except JsonRefused as exc:  # too deep, or too many values
            raise DicomWebError(f"The DICOMweb server at {self.base_url} sent a search answer we do not read: "
                                f"{exc}.") from None
        except ValueError as exc:
            raise DicomWebError(f"The DICOMweb server at {self.base_url} sent a search answer that is not JSON"
                                f" ({_shown(_content_type(response))}).") from exc
        if not isinstance(items, list):
            raise DicomWebError(f"The DICOMweb server at {self.base_url} sent a search answer that is not a list.")
        return [dicom_json_to_dict(item) for item in items[:limit] if isinstance(item, Mapping)]

    find = qido  # the PacsClient interface

    # -- STOW-RS (PS3.18 10.5) ----------------------------------------------------------------------------

    def stow(self, instances: Sequence[bytes], study_uid: str = "") -> tuple[list[str], dict[str, str]]:
        """Store Part 10 files with one STOW-RS request (``POST /studies[/{study}]``, multipart/related of
        application/dicom); return the SOP Instance UIDs the server stored and those it refused (UID -> reason).
        Its answer is read bounded (QIDO_BYTES_MAX, JSON limits); an HTTP error is a DicomWebError."""
        if study_uid and not is_valid_uid(study_uid):
            raise DicomWebError(f"'{study_uid}' is not a valid Study Instance UID.")
        boundary = f"mifas-{uuid.uuid4().hex}"
        parts = bytearray()
        for data in instances:
            parts += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
            parts += data
            parts += b"\r\n"
        parts += f"--{boundary}--\r\n".encode("ascii")
        path = f"/studies/{study_uid}" if study_uid else "/studies"
        try:
            response = self._get(path, accept=ACCEPT_JSON, stream=True, method="POST", body=bytes(parts),
                                 content_type=f'multipart/related; type="application/dicom"; boundary={boundary}')
        except DicomWebError as exc:
            if exc.http_status != 409:  # 409: every instance refused, the body says why
                raise
            return [], {"": str(exc)}
        try:
            body = _read_bounded(response, QIDO_BYTES_MAX, self.base_url)
        finally:
            response.close()
        try:
            answer = parse_json(body) if body.strip() else {}
        except (JsonRefused, ValueError):
            raise DicomWebError(f"The DICOMweb server at {self.base_url} sent a store answer we do not read.") \
                from None
        stored: list[str] = []
        refused: dict[str, str] = {}
        if isinstance(answer, list):
            answer = answer[0] if answer and isinstance(answer[0], Mapping) else {}
        if isinstance(answer, Mapping):
            for tag, target in (("00081199", stored), ("00081198", refused)):
                for item in (answer.get(tag) or {}).get("Value", []) if isinstance(answer.get(tag), Mapping) else []:
                    fields = dicom_json_to_dict(item) if isinstance(item, Mapping) else {}
                    uid = fields.get("ReferencedSOPInstanceUID", "")
                    if isinstance(target, list):
                        target.append(uid)
                    else:
                        target[uid] = f"failure reason {_shown(fields.get('FailureReason', ''))}"
        return stored, refused

    # -- WADO-RS (PS3.18 10.4) ----------------------------------------------------------------------------

    def retrieve(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        sop_class_uids: Collection[str] | None = None,
    ) -> RetrieveResult:
        """Retrieve a study, a series or listed instances; each instance goes to `sink` as Part 10 bytes.

        Listed instances are fetched one request each (``.../instances/{uid}``, a few in parallel), or, when
        they are most of their series, with one series request whose other instances are dropped; without
        `series_uid` their series are looked up with QIDO-RS first.  `sop_class_uids` is accepted for
        interface symmetry.
        """
        for label, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid)):
            if uid is not None and not is_valid_uid(uid):
                raise DicomWebError(f"'{uid}' is not a valid {label}.")
        started = time.monotonic()
        instance_sink = InstanceSink.wrap(sink, wanted=sop_instance_uids, study_uid=study_uid, series_uid=series_uid,
                                          progress=progress)
        mark = instance_sink.mark()
        try:
            if sop_instance_uids is None:
                path = f"/studies/{study_uid}" + (f"/series/{series_uid}" if series_uid else "")
                self._fetch(path, instance_sink, cancel)
            else:
                located = self._locate(study_uid, series_uid, sop_instance_uids, cancel)
                if series_uid and self._most_of_series(study_uid, series_uid, len(located)):
                    # One series request instead of one request per instance (about 10 ms each with Orthanc);
                    # the instances not asked for are dropped, any missing are fetched one by one below.
                    self._fetch(f"/studies/{study_uid}/series/{series_uid}", instance_sink, cancel, whole_series=True)
                    located = [(series, uid) for series, uid in located if not instance_sink.held(uid)]
                paths = [f"/studies/{study_uid}/series/{series}/instances/{uid}" for series, uid in located]
                self._fetch_all(paths, instance_sink, cancel)
        finally:
            instance_sink.flush()
        if instance_sink.fatal is not None:
            raise instance_sink.fatal
        refused = instance_sink.mark().refused - mark.refused  # no peer counts failures for us here
        return instance_sink.result(mark, time.monotonic() - started, failed=refused)

    def _most_of_series(self, study_uid: str, series_uid: str, wanted: int) -> bool:
        """Whether `wanted` instances are at least half of the series (QIDO-RS says how many it has)."""
        if wanted < SERIES_REQUEST_MIN:
            return False
        rows = self.qido("series", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, limit=1)
        try:
            size = int(rows[0]["NumberOfSeriesRelatedInstances"]) if rows else 0
        except (KeyError, ValueError):
            return False
        return 0 < size <= 2 * wanted

    def _fetch_all(self, paths: list[str], sink: InstanceSink, cancel: threading.Event | None) -> None:
        """One request per instance, :data:`PARALLEL_REQUESTS` at a time, in the order given (roughly: they
        overlap).  The first error stops the others and is raised."""
        if len(paths) <= 1:
            for path in paths:
                self._fetch(path, sink, cancel)
            return
        failed = threading.Event()
        stop = AnyEvent(cancel, failed)
        pending = iter(paths)
        lock = threading.Lock()

        def worker() -> None:
            while not failed.is_set():
                with lock:
                    path = next(pending, None)
                if path is None:
                    return
                try:
                    self._fetch(path, sink, stop)
                except BaseException:
                    failed.set()
                    raise

        errors = []
        with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(paths)), thread_name_prefix="viewer.pacs.wado") as pool:
            for future in [pool.submit(worker) for _ in range(min(PARALLEL_REQUESTS, len(paths)))]:
                if future.exception() is not None:
                    errors.append(future.exception())
        if errors:  # the first real error, not the cancellations it caused in the other workers
            raise next((e for e in errors if not isinstance(e, OperationCancelled)), errors[0])

    def _locate(self, study_uid: str, series_uid: str | None, sop_instance_uids: Sequence[str],
                cancel: threading.Event | None) -> list[tuple[str, str]]:
        uids = list(dict.fromkeys(sop_instance_uids))
        for uid in uids:
            if not is_valid_uid(uid):
                raise DicomWebError(f"'{uid}' is not a valid SOP Instance UID.")
        if series_uid:
            return [(series_uid, uid) for uid in uids]
        found = {}
        for item in self.qido("image", {"StudyInstanceUID": study_uid}, cancel=cancel, limit=FIND_RESULTS_LIMIT_MAX):
            if is_valid_uid(item.get("SeriesInstanceUID")):
                found[item.get("SOPInstanceUID", "")] = item["SeriesInstanceUID"]
        missing = [uid for uid in uids if uid not in found]
        if missing:
            raise DicomWebError(f"The DICOMweb server at {self.base_url} does not list {len(missing)} of the "
                                f"requested images in study {study_uid}.")
        return [(found[uid], uid) for uid in uids]

    def _fetch(self, path: str, sink: InstanceSink, cancel: threading.Event | AnyEvent | None,
               whole_series: bool = False) -> None:
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
        response = self._get(path, accept=ACCEPT_DICOM, stream=True)
        try:
            content_type = _content_type(response)
            boundary = boundary_of(content_type)
            if not content_type.lower().startswith("multipart/related") or boundary is None:
                raise DicomWebError(
                    f"The DICOMweb server at {self.base_url} sent {_shown(content_type) or 'an untyped answer'} "
                    "instead of DICOM instances (multipart/related).")
            reader = MultipartReader(self._chunks(response, cancel), boundary,
                                     where=f"The DICOMweb server at {self.base_url}")
            for count, (headers, body) in enumerate(reader, 1):
                if cancel is not None and cancel.is_set():  # a chunk may hold many small parts
                    raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
                if count > PARTS_PER_ANSWER_MAX:
                    raise DicomWebError(f"The DICOMweb server at {self.base_url} sent more than "
                                        f"{PARTS_PER_ANSWER_MAX:,} parts in one answer; the rest was not read.",
                                        transient=False)
                part_type = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
                if part_type != "application/dicom" or not _part10_ok(body):
                    raise DicomWebError(
                        f"The DICOMweb server at {self.base_url} sent a part that is not a DICOM file "
                        f"({_shown(part_type) or 'untyped'}, {len(body)} bytes).")
                sink.offer(body, whole_series=whole_series)
                if sink.fatal is not None:  # nothing more can be stored; the caller sees why
                    raise sink.fatal
        finally:
            response.close()

    def _chunks(self, response: requests.Response, cancel: threading.Event | AnyEvent | None) -> Iterator[bytes]:
        try:
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                if cancel is not None and cancel.is_set():
                    raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
                yield chunk
        except requests.ConnectionError as exc:  # includes read timeouts raised while streaming
            if "timed out" in str(exc).lower():
                raise PacsTimeoutError(
                    f"The DICOMweb server at {self.base_url} stopped sending: nothing received for "
                    f"{self.timeouts.dimse_s:g} s.") from exc
            raise DicomWebError(f"The connection to the DICOMweb server at {self.base_url} broke off during "
                                "the transfer.", transient=True) from exc
        except requests.RequestException as exc:  # ChunkedEncodingError, ContentDecodingError
            raise DicomWebError(f"The DICOMweb server at {self.base_url} sent a damaged answer ({_reason(exc)}).",
                                transient=True) from exc


def _content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "")




def _shown(text: str) -> str:
    """A text the server chose, as a message may quote it: printable ASCII only (no line breaks that would forge
    log lines), at most SHOWN_CHARS_MAX characters."""
    clean = re.sub(r"[^\x20-\x7e]", "?", text)
    return clean if len(clean) <= SHOWN_CHARS_MAX else clean[:SHOWN_CHARS_MAX] + "..."


def _read_bounded(response: requests.Response, limit: int, where: str) -> bytes:
    data = bytearray()
    try:
        for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
            data += chunk
            if len(data) > limit:
                raise DicomWebError(f"The DICOMweb server at {where} sent a search answer over {limit >> 20} MiB.")
    except requests.RequestException as exc:
        raise DicomWebError(f"The DICOMweb server at {where} broke off its answer ({_reason(exc)}).",
                            transient=True) from exc
    return bytes(data)


def _reason(exc: BaseException) -> str:
    """A requests error in a few words (its text nests the urllib3 chain)."""
    text = str(exc) or type(exc).__name__
    text = without_secrets(text)  # its URL's query string (a search's patient attributes) and user-info
    if "refused" in text.lower():
        return "connection refused: nothing is listening there"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "host name not found"
    return text[:ERROR_BODY_CHARS]
