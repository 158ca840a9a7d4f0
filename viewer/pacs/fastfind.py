"""The C-FIND Service Class User (PS3.4 C.4.1, PS3.7 9.1.2 / 9.3.2) on a lean association
(:mod:`viewer.pacs.association`): the only C-FIND the viewer has.

1. A-ASSOCIATE-RQ with one presentation context: the Study Root Query/Retrieve Information Model - FIND (the
   Patient Root one for patient-level queries), in Explicit and Implicit VR Little Endian.
2. C-FIND-RQ (PS3.7 9.3.2.1): command set in Implicit VR Little Endian, the identifier of
   :func:`viewer.pacs.query.query_identifier` in the accepted syntax.
3. Each pending C-FIND-RSP (PS3.7 9.3.2.2) carries one match: it becomes a ``{keyword: text}`` dict exactly as
   :func:`viewer.pacs.query.identifier_to_dict` gives it, read by :func:`identifier_dict` without building a
   pydicom Dataset (see there).  The final C-FIND-RSP ends the query; A-RELEASE, or A-ABORT on any error.

Bounds: a match's identifier may be at most :data:`IDENTIFIER_BYTES_MAX` long (a longer one is drained without
being kept and ends the query with an error).  After `limit` matches we send a C-CANCEL-RQ (PS3.7 9.3.2.3),
ignore what still arrives and give the peer :data:`CANCEL_GRACE_S` to send its final response, then abort; the
result (:class:`~viewer.pacs.node.Matches`) says ``truncated``.  The caller's cancel event sends the same
C-CANCEL-RQ and raises :class:`~viewer.errors.OperationCancelled`.

Matches are patient data (names, IDs, birth dates): nothing here logs them.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping

from viewer.errors import OperationCancelled, PacsError, PacsStatusError
from viewer.imports import need
from viewer.limits import FIND_RESULTS_LIMIT_MAX, FIND_RESULTS_MAX, IDENTIFIER_BYTES_MAX
from viewer.pacs.association import DeadlineExceeded, IdleTimeout, LeanAssociation
from viewer.pacs.contexts import (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    UNCOMPRESSED_SYNTAXES,
    ImplicitVRLittleEndian,
)
from viewer.pacs.elements import keyword_of
from viewer.pacs.node import Matches, Node
from viewer.pacs.pdu import (
    DATA_SET_ABSENT,
    PRIORITY_MEDIUM,
    CommandField,
    CommandTag,
    ProposedContext,
    ProtocolError,
    encode_command,
)
from viewer.pacs.query import Identifier, identifier_to_dict, query_identifier
from viewer.pacs.status import CANCEL, FAILURE, PENDING, WARNING, DimseStatus, category, describe_status

log = logging.getLogger(__name__)

FIND_CONTEXT_ID = 1  # the one presentation context we propose
# A match is a flat list of a few dozen short attributes (hundreds of bytes).  A megabyte is far beyond any
# real one, yet small enough that a broken or hostile peer cannot make us hold much: a longer identifier is
# drained without being kept (viewer.pacs.association) and ends the query with an error.
# After our C-CANCEL-RQ (the limit was reached, or the caller cancelled) the peer has this long to send its
# final response.  A PACS that honours C-CANCEL answers within a round trip plus what it had already queued;
# one that ignores it and keeps flooding matches costs us at most this before we abort.
CANCEL_GRACE_S = 2.0
CANCELLED = "The search was cancelled."


class _CancelGraceOver(Exception):
    """The peer did not end the query within CANCEL_GRACE_S of our C-CANCEL-RQ."""


class _OversizedMatch(Exception):
    """A match's identifier is longer than IDENTIFIER_BYTES_MAX (its length, when known)."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


# -- reading a match's identifier ------------------------------------------------------------------------------


class _Fallback(Exception):
    """The identifier holds something the hand-written reader does not reproduce exactly: use pydicom."""


_IMPLICIT_HEADER = struct.Struct("<HHL").unpack_from
_EXPLICIT_HEADER = struct.Struct("<HH2sH").unpack_from
_LONG_LENGTH = struct.Struct("<L").unpack_from
_HEADER_BYTES = 8
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SPECIFIC_CHARACTER_SET = 0x00080005
_ESC = b"\x1b"
_DEFAULT_CODEC = "iso8859"  # pydicom's default_encoding: what every non-text VR and the default repertoire use
# (0008,0005) values we decode exactly as pydicom does (PS3.3 C.12.1.1.2, no code extensions) -> Python codec
_CHARSETS = {"": _DEFAULT_CODEC, "ISO_IR 6": _DEFAULT_CODEC, "ISO_IR 100": "latin_1", "ISO_IR 192": "UTF8"}
# Text VRs whose bytes are decoded with the Specific Character Set (PS3.5 6.1.2.3); the others use the default.
_CHARSET_VRS = frozenset({"PN", "SH", "LO", "UC", "ST", "LT", "UT"})
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OW", "OV"})  # values are bytes: identifier_to_dict leaves them out
# Explicit VR Little Endian: VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OW", "OV", "SQ", "UC", "UR", "UT"})
_DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})
# IS values pydicom keeps as their text (stripped): plain integers with optional spaces around them.  Longer
# digit strings or anything else (decimals, underscores, other whitespace) take pydicom's own path.
_PLAIN_IS = re.compile(r" *[+-]?[0-9]{1,16} *")
_NOT_RESULTS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})  # as viewer.pacs.query leaves out

# tag -> (keyword, dictionary VR), or None for a tag the reader leaves to pydicom (not in its dictionary: private,
# repeating groups, group lengths).  Filled on first sight of each tag.
_ELEMENTS: dict[int, tuple[str, str] | None] = {}


def _element(tag: int) -> tuple[str, str] | None:
    try:
        return _ELEMENTS[tag]
    except KeyError:
        pass
    entry = keyword_of(tag)
    _ELEMENTS[tag] = entry
    return entry


def _decode_text(raw: bytes, codec: str) -> str:
    """pydicom's charset.decode_bytes for one encoding and no escape sequences."""
    if _ESC in raw:
        raise _Fallback  # ISO 2022 code extensions
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return raw.decode(codec, "replace")  # what pydicom does (with a warning) unless its validation raises


def _is_text(raw: bytes) -> str:
    items = raw.decode(_DEFAULT_CODEC).rstrip(" \x00").split("\\")
    out = []
    for item in items:
        if item.strip() == "":
            out.append(item)  # valuerep.IS returns an empty (or blank) string as it is
        elif _PLAIN_IS.fullmatch(item):
            out.append(item.strip())  # str(IS) is its original string, stripped
        else:
            raise _Fallback
    return "\\".join(out)


def _value_text(vr: str, raw: bytes, codec: str) -> str:
    """The text identifier_to_dict gives for one non-empty value, as pydicom's converters (values.py) make it."""
    if vr in _CHARSET_VRS:
        if vr == "PN":  # convert_PN: strip the padding, decode, split; str(PersonName) drops trailing '='
            return "\\".join(v.rstrip("=") for v in _decode_text(raw.rstrip(b"\x00 "), codec).split("\\"))
        if vr in ("SH", "LO", "UC"):  # convert_text
            return "\\".join(v.rstrip("\x00 ") for v in _decode_text(raw, codec).split("\\"))
        return _decode_text(raw, codec).rstrip("\x00 ")  # ST, LT, UT: convert_single_string
    if vr in ("CS", "AS", "DA", "DT", "TM"):  # convert_string (dates and times without datetime_conversion)
        return raw.decode(_DEFAULT_CODEC).rstrip(" \x00")
    if vr == "UI":  # convert_UI, then UID() strips each value
        return "\\".join(v.strip() for v in raw.decode(_DEFAULT_CODEC).rstrip("\x00 ").split("\\"))
    if vr == "IS":
        return _is_text(raw)
    if vr == "AE":  # convert_AE_string
        return "\\".join(v.strip() for v in raw.decode(_DEFAULT_CODEC).split("\\"))
    if vr == "UR":
        return raw.decode(_DEFAULT_CODEC).rstrip()
    raise _Fallback  # DS, numbers, AT, UN, ambiguous VRs: left to pydicom


_TEXT_VRS = frozenset({"PN", "SH", "LO", "UC", "ST", "LT", "UT", "CS", "AS", "DA", "DT", "TM", "UI", "IS", "AE", "UR"})
_KNOWN_VRS = _TEXT_VRS | _BYTES_VRS | {"SQ"}
_EXPLICIT_VRS = {vr.encode("ascii"): vr for vr in _KNOWN_VRS}


def read_identifier(data: bytes, implicit: bool) -> dict[str, str] | None:
    """A flat C-FIND identifier (Little Endian; Implicit VR when `implicit`) as ``{keyword: text}``, exactly as
    ``identifier_to_dict(pynetdicom.dsutils.decode(...))`` gives it, or None when the identifier holds
    something this reader does not reproduce exactly (other character sets or code extensions, undefined
    lengths, non-empty sequences, VRs such as DS or binary numbers, unknown or private tags, tags out of order,
    a value running past the end, an encoding that pydicom would switch).  Assumes pydicom's default
    configuration (see :func:`identifier_dict`)."""
    end = len(data)
    if end >= 6:  # filereader._is_implicit_vr: pydicom switches encodings when the first element says so
        found_implicit = not (0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B)
        if found_implicit != implicit:
            return None
    out: dict[str, str] = {}
    codec = _DEFAULT_CODEC
    offset, last_tag = 0, -1
    try:
        while end - offset >= _HEADER_BYTES:  # pydicom stops quietly at fewer bytes than a header
            if implicit:
                group, elem, length = _IMPLICIT_HEADER(data, offset)
                offset += _HEADER_BYTES
                tag = group << 16 | elem
                entry = _element(tag)
                if entry is None:
                    return None
                keyword, vr = entry
                if vr not in _KNOWN_VRS:  # e.g. "US or SS": resolved by pydicom from other elements
                    return None
            else:
                group, elem, vr_bytes, length = _EXPLICIT_HEADER(data, offset)
                offset += _HEADER_BYTES
                vr = _EXPLICIT_VRS.get(vr_bytes)  # type: ignore[assignment]
                if vr is None:
                    return None
                if vr in _LONG_VRS:
                    if end - offset < 4:
                        return None
                    length = _LONG_LENGTH(data, offset)[0]
                    offset += 4
                tag = group << 16 | elem
                entry = _element(tag)
                if entry is None:
                    return None
                keyword = entry[0]
            if tag <= last_tag or length == _UNDEFINED_LENGTH or offset + length > end:
                return None
            last_tag = tag
            raw = data[offset:offset + length]
            offset += length
            if tag == _SPECIFIC_CHARACTER_SET:
                if vr != "CS":
                    return None
                charset = _CHARSETS.get(raw.decode(_DEFAULT_CODEC).rstrip(" \x00"))
                if charset is None:
                    return None
                codec = charset
                continue
            if tag < _SPECIFIC_CHARACTER_SET and vr in _CHARSET_VRS:
                return None  # read before the character set is known: left to pydicom
            if vr == "SQ":
                if length:
                    return None  # nested data sets: left to pydicom
                continue
            if not length:
                text = ""  # pydicom's empty value ("", PersonName(""), None) reads as ""
            elif vr in _BYTES_VRS:
                continue
            else:
                text = _value_text(vr, raw, codec)
            if keyword not in _NOT_RESULTS:
                out[keyword] = text
    except _Fallback:
        return None
    return out


def _reader_applies() -> bool:
    """Whether pydicom is configured as :func:`read_identifier` assumes (its defaults).  Imports nothing: when
    nothing has imported pydicom its defaults hold; while another thread is importing it (a module only partly
    initialised), pydicom's own path is taken, which waits for that import."""
    if "pydicom" not in sys.modules:
        return True
    config = sys.modules.get("pydicom.config")
    hooks_module = sys.modules.get("pydicom.hooks")
    try:
        hooks = hooks_module.hooks  # type: ignore[union-attr]
        return (not config.datetime_conversion and not config.use_IS_numpy  # type: ignore[union-attr]
                and config.settings.reading_validation_mode != config.RAISE  # type: ignore[union-attr]
                and config.data_element_callback is None  # type: ignore[union-attr]
                and hooks.raw_element_vr is hooks_module.raw_element_vr  # type: ignore[union-attr]
                and hooks.raw_element_value is hooks_module.raw_element_value  # type: ignore[union-attr]
                and not hooks.raw_element_kwargs)
    except AttributeError:  # None, or not yet initialised
        return False


def identifier_dict(data: bytes, implicit: bool) -> dict[str, str]:
    """A C-FIND response identifier as ``{keyword: text}``: :func:`read_identifier` where it applies, else
    pydicom's decode and :func:`~viewer.pacs.query.identifier_to_dict`, so the result is always the same.
    Raises what pydicom raises for an identifier it cannot decode."""
    if _reader_applies():
        row = read_identifier(data, implicit)
        if row is not None:
            return row
    need("pynetdicom")
    from pynetdicom.dsutils import decode

    return identifier_to_dict(decode(io.BytesIO(data), implicit, True))


# -- the query ---------------------------------------------------------------------------------------------------


class _FindAssociation(LeanAssociation):
    """One association, one C-FIND: the matches, the limit, the cancel."""

    service = "C-FIND"
    dataset_bytes_max = IDENTIFIER_BYTES_MAX

    def __init__(self, node: Node, model: str, limit: int, cancel: threading.Event | None,
                 decode_match: Callable[[bytes, bool], dict[str, str]]) -> None:
        super().__init__(node, [ProposedContext(FIND_CONTEXT_ID, model, UNCOMPRESSED_SYNTAXES)], [])
        self.model = model
        self.limit = limit
        self.cancel = cancel
        self.decode_match = decode_match
        self.matches = Matches()
        self.responses = 0  # pending C-FIND-RSPs received
        self.ignored = 0  # matches that arrived after our C-CANCEL-RQ
        self.undecodable = 0
        self.find_msg_id = 0
        self.implicit = False
        self.cancel_reason: str | None = None  # "limit" or "caller" once our C-CANCEL-RQ is out
        self.cancel_deadline = 0.0

    def open(self) -> None:
        super().open()
        if not self.accepted_context(self.model):
            root = "Patient Root" if self.model == PATIENT_ROOT_FIND else "Study Root"
            raise PacsError(f"The PACS {self.node.describe()} does not offer C-FIND ({root}).")
        self.implicit = self.syntax_by_context[FIND_CONTEXT_ID] == ImplicitVRLittleEndian

    def send_find(self, identifier: Identifier) -> None:
        """C-FIND-RQ (PS3.7 9.3.2.1)."""
        payload = identifier.encode(self.implicit)
        self.find_msg_id = self.next_msg_id()
        command = encode_command({
            CommandTag.AFFECTED_SOP_CLASS_UID: self.model,
            CommandTag.COMMAND_FIELD: CommandField.C_FIND_RQ,
            CommandTag.MESSAGE_ID: self.find_msg_id,
            CommandTag.PRIORITY: PRIORITY_MEDIUM,
            CommandTag.COMMAND_DATA_SET_TYPE: 0x0000,  # any value but DATA_SET_ABSENT: an identifier follows
        })
        self.send_message(FIND_CONTEXT_ID, command, payload)

    def _send_cancel(self, reason: str) -> None:
        """C-CANCEL-RQ (PS3.7 9.3.2.3); from now on matches are ignored."""
        self.cancel_reason = reason
        self.cancel_deadline = time.monotonic() + CANCEL_GRACE_S
        command = encode_command({
            CommandTag.COMMAND_FIELD: CommandField.C_CANCEL_RQ,
            CommandTag.MESSAGE_ID_BEING_RESPONDED_TO: self.find_msg_id,
            CommandTag.COMMAND_DATA_SET_TYPE: DATA_SET_ABSENT,
        })
        try:
            self.send_message(FIND_CONTEXT_ID, command)
        except OSError:
            log.debug("C-CANCEL not sent", exc_info=True)
        log.info("C-CANCEL sent to %s (%s)", self.node.address, reason)

    def poll(self) -> None:
        """Start the caller's cancel, or give up on a peer that ignores ours."""
        if self.cancel_reason is None:
            if self.cancel is not None and self.cancel.is_set():
                if not self.find_msg_id:
                    raise OperationCancelled(CANCELLED)
                self._send_cancel("caller")
        elif time.monotonic() > self.cancel_deadline:
            raise _CancelGraceOver()

    def on_message(self, context_id: int, command: dict[int, int | str], data: list[memoryview] | None,
                   dataset_bytes: int) -> object:
        self.poll()  # a peer that floods us never leaves the receive loop idle
        if command.get(CommandTag.COMMAND_FIELD) != CommandField.C_FIND_RSP:
            field = command.get(CommandTag.COMMAND_FIELD)
            raise ProtocolError(f"the peer sent an unexpected DIMSE message (command field 0x{field or 0:04X})")
        status = command.get(CommandTag.STATUS)
        if not isinstance(status, int):
            raise ProtocolError("the peer sent a C-FIND-RSP without a status")
        if category(status) != PENDING:
            return command  # the final response
        self.responses += 1
        if self.cancel_reason is not None:
            if data is not None or dataset_bytes:
                self.ignored += 1
            return None
        if data is None:
            if dataset_bytes:
                raise _OversizedMatch(dataset_bytes)
            return None  # a pending response without an identifier
        if context_id != FIND_CONTEXT_ID:
            raise ProtocolError(f"the peer answered on presentation context {context_id}, not {FIND_CONTEXT_ID}")
        try:
            row = self.decode_match(b"".join(data), self.implicit)
        except Exception:  # as pynetdicom does: an undecodable match is left out, the others are kept
            self.undecodable += 1
            log.warning("a C-FIND match from %s could not be decoded and was left out", self.node.address)
            return None
        self.matches.append(row)
        if len(self.matches) >= self.limit:
            self._send_cancel("limit")
        return None

    def run(self, identifier: Identifier) -> Matches:
        """Open, query, release; the matches, or the translated error."""
        self.open()
        self.send_find(identifier)
        try:
            final = self.receive()
        except _OversizedMatch as exc:
            size = f"{exc.size} bytes, " if exc.size is not None else ""
            raise PacsError(f"The PACS {self.node.describe()} sent a search match of {size}more than the "
                            f"{IDENTIFIER_BYTES_MAX} bytes a match may have; the search was stopped.",
                            transient=False) from None
        except _CancelGraceOver:
            log.info("%s did not end the C-FIND within %g s of our C-CANCEL; aborting", self.node.address,
                     CANCEL_GRACE_S)
            self.abort()
            return self._cancelled(None)
        except (OSError, ProtocolError, IdleTimeout, DeadlineExceeded) as exc:
            if self.cancel_reason is not None:  # the peer dropped the association after our C-CANCEL
                log.info("the association to %s ended after our C-CANCEL", self.node.address)
                return self._cancelled(None)
            raise self.translate(exc, nothing_yet=self.responses == 0) from exc
        assert isinstance(final, dict)
        code = int(final[CommandTag.STATUS])
        self.release()
        if self.cancel_reason is not None:
            return self._cancelled(code)
        if category(code) == FAILURE:
            raise PacsStatusError(f"The PACS {self.node.describe()} could not run the search: "
                                  f"{describe_status(code)}.", code)
        if category(code) == CANCEL:  # it stopped on its own: what arrived is not all there is
            log.info("%s ended the C-FIND with %s", self.node.address, describe_status(code))
            self.matches.truncated = True
        elif category(code) == WARNING:
            log.info("C-FIND ended with %s", describe_status(code))
        return self.matches

    def _cancelled(self, code: int | None) -> Matches:
        """The end of a query we cancelled: `code` is the final status, None when there was none."""
        if self.cancel_reason == "caller":
            raise OperationCancelled(CANCELLED)
        # The limit was reached.  Nothing was cut only when the peer had already sent everything.
        self.matches.truncated = not (code == DimseStatus.SUCCESS and self.ignored == 0)
        if self.matches.truncated:
            log.info("C-FIND stopped at the limit of %d matches", self.limit)
        return self.matches


class FastFindClient:
    """C-FIND for one node on a lean association (one per query)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def find(
        self,
        level: str,
        keys: Mapping[str, str] | None = None,
        *,
        cancel: threading.Event | None = None,
        limit: int = FIND_RESULTS_MAX,
    ) -> Matches:
        """Query the node; one ``{keyword: text}`` dict per match, at most `limit` (then C-CANCEL, and the result
        says ``truncated``).  Study Root model, Patient Root for level ``"patient"``; `keys` are DICOM keywords
        with matching values, and each level also asks for :data:`~viewer.pacs.node.DEFAULT_RETURN_KEYS`."""
        if not 1 <= limit <= FIND_RESULTS_LIMIT_MAX:
            raise ValueError(f"limit must be between 1 and {FIND_RESULTS_LIMIT_MAX}")
        identifier = query_identifier(level, keys or {})
        model = PATIENT_ROOT_FIND if level == "patient" else STUDY_ROOT_FIND
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("The operation was cancelled.")
        assoc = _FindAssociation(self.node, model, limit, cancel, identifier_dict)
        try:
            return assoc.run(identifier)
        except BaseException:
            assoc.abort()
            raise
        finally:
            assoc.close()
