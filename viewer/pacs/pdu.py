"""The few Upper Layer PDUs and DIMSE command sets the lean C-GET and C-FIND SCUs need, encoded and decoded by
hand (PS3.8 9.3, PS3.7 9.3 and E.1), so the hot path never builds a pydicom Dataset per instance.

PDUs (PS3.8 9.3.1): type (1 byte), reserved (1), length (4, big endian), then the body.  Items and sub-items
inside A-ASSOCIATE-RQ/AC: type (1), reserved (1), length (2, big endian).  A P-DATA-TF body is a run of
Presentation Data Value items: length (4), presentation context ID (1), message control header (1), fragment.

Command sets (PS3.7 6.3.1, E.1) are always Implicit VR Little Endian: tag (group, element: 2 + 2, little
endian), value length (4), value; group length (0000,0000) first.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

# -- PDU and item types (PS3.8 9.3.1, Table 9-11 ff.) --------------------------------------------------------


class PduType(IntEnum):
    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class ItemType(IntEnum):
    APPLICATION_CONTEXT = 0x10  # PS3.8 9.3.2.1
    PRESENTATION_CONTEXT_RQ = 0x20  # PS3.8 9.3.2.2
    PRESENTATION_CONTEXT_AC = 0x21  # PS3.8 9.3.3.2
    ABSTRACT_SYNTAX = 0x30  # PS3.8 9.3.2.2.1
    TRANSFER_SYNTAX = 0x40  # PS3.8 9.3.2.2.2
    USER_INFORMATION = 0x50  # PS3.8 9.3.2.3
    MAXIMUM_LENGTH = 0x51  # PS3.8 D.1
    IMPLEMENTATION_CLASS_UID = 0x52  # PS3.7 D.3.3.2
    SCP_SCU_ROLE_SELECTION = 0x54  # PS3.7 D.3.3.4
    IMPLEMENTATION_VERSION_NAME = 0x55  # PS3.7 D.3.3.2


PROTOCOL_VERSION = 0x0001  # PS3.8 9.3.2, bit 0
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1, the DICOM Application Context Name
PDU_HEADER = struct.Struct(">BBL")  # type, reserved, length
PDV_HEADER = struct.Struct(">LBB")  # item length, presentation context ID, message control header
PDU_HEADER_BYTES = PDU_HEADER.size
PDV_HEADER_BYTES = PDV_HEADER.size
AE_FIELD_BYTES = 16  # PS3.8 9.3.2: called/calling AE titles, space padded
ASSOCIATE_FIXED_BYTES = 68  # PS3.8 9.3.2/9.3.3: protocol version .. reserved, before the variable items

# Message Control Header bits (PS3.8 E.2)
MCH_COMMAND = 0x01  # 1: command information, 0: data set
MCH_LAST_FRAGMENT = 0x02  # 1: last fragment of the command or data set

# A-ASSOCIATE-AC presentation context result (PS3.8 9.3.3.2)
PC_ACCEPTANCE = 0

# A-ABORT source (PS3.8 9.3.8): 0 service user, 2 service provider
ABORT_SOURCE_SERVICE_USER = 0


class ProtocolError(Exception):
    """The peer sent something that breaks PS3.8/PS3.7 (caught by the SCU and turned into a viewer.errors type)."""


# -- A-ASSOCIATE-RQ (PS3.8 9.3.2) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposedContext:
    context_id: int  # odd, 1-255 (PS3.8 9.3.2.2)
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRequest:
    calling_ae: str
    called_ae: str
    contexts: Sequence[ProposedContext]
    scp_role_sop_classes: Sequence[str]  # SCP/SCU Role Selection: we act as SCP (C-GET's C-STORE sub-operations)
    max_pdu_bytes: int
    implementation_class_uid: str
    implementation_version_name: str


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae_field(title: str) -> bytes:
    return title.encode("ascii").ljust(AE_FIELD_BYTES, b" ")


def encode_associate_rq(rq: AssociateRequest) -> bytes:
    items = [_item(ItemType.APPLICATION_CONTEXT, APPLICATION_CONTEXT_NAME.encode("ascii"))]
    for cx in rq.contexts:
        body = struct.pack(">BBBB", cx.context_id, 0, 0, 0)
        body += _item(ItemType.ABSTRACT_SYNTAX, cx.abstract_syntax.encode("ascii"))
        body += b"".join(_item(ItemType.TRANSFER_SYNTAX, ts.encode("ascii")) for ts in cx.transfer_syntaxes)
        items.append(_item(ItemType.PRESENTATION_CONTEXT_RQ, body))
    user = _item(ItemType.MAXIMUM_LENGTH, struct.pack(">L", rq.max_pdu_bytes))
    user += _item(ItemType.IMPLEMENTATION_CLASS_UID, rq.implementation_class_uid.encode("ascii"))
    user += _item(ItemType.IMPLEMENTATION_VERSION_NAME, rq.implementation_version_name.encode("ascii"))
    for uid in rq.scp_role_sop_classes:
        raw = uid.encode("ascii")
        user += _item(ItemType.SCP_SCU_ROLE_SELECTION, struct.pack(">H", len(raw)) + raw + bytes((0, 1)))
    items.append(_item(ItemType.USER_INFORMATION, user))
    body = struct.pack(">HH", PROTOCOL_VERSION, 0) + _ae_field(rq.called_ae) + _ae_field(rq.calling_ae)
    body += bytes(32) + b"".join(items)
    return PDU_HEADER.pack(PduType.A_ASSOCIATE_RQ, 0, len(body)) + body


# -- A-ASSOCIATE-AC (PS3.8 9.3.3) ----------------------------------------------------------------------------


@dataclass
class AssociateAccept:
    accepted: dict[int, str] = field(default_factory=dict)  # context ID -> transfer syntax, accepted ones only
    peer_max_pdu_bytes: int = 0  # 0: no limit (PS3.8 D.1)


def _items(data: bytes | memoryview) -> Iterable[tuple[int, memoryview]]:
    view = memoryview(data)
    offset = 0
    while offset + 4 <= len(view):
        item_type, _, length = struct.unpack_from(">BBH", view, offset)
        end = offset + 4 + length
        if end > len(view):
            raise ProtocolError("an A-ASSOCIATE-AC item runs past the end of the PDU")
        yield item_type, view[offset + 4:end]
        offset = end


def _uid_text(raw: bytes | memoryview) -> str:
    return bytes(raw).rstrip(b"\x00 ").decode("ascii", "replace")


def decode_associate_ac(body: bytes | memoryview) -> AssociateAccept:
    if len(body) < ASSOCIATE_FIXED_BYTES:
        raise ProtocolError("the A-ASSOCIATE-AC is too short")
    accept = AssociateAccept()
    for item_type, value in _items(memoryview(body)[ASSOCIATE_FIXED_BYTES:]):
        if item_type == ItemType.PRESENTATION_CONTEXT_AC and len(value) >= 4:
            context_id, result = value[0], value[2]
            syntaxes = [_uid_text(v) for t, v in _items(value[4:]) if t == ItemType.TRANSFER_SYNTAX]
            if result == PC_ACCEPTANCE and syntaxes:
                accept.accepted[context_id] = syntaxes[0]
        elif item_type == ItemType.USER_INFORMATION:
            for sub_type, sub in _items(value):
                if sub_type == ItemType.MAXIMUM_LENGTH and len(sub) == 4:
                    accept.peer_max_pdu_bytes = struct.unpack(">L", sub)[0]
    return accept


# -- other PDUs ----------------------------------------------------------------------------------------------


def encode_release_rq() -> bytes:
    return PDU_HEADER.pack(PduType.A_RELEASE_RQ, 0, 4) + bytes(4)  # PS3.8 9.3.6


def encode_release_rp() -> bytes:
    return PDU_HEADER.pack(PduType.A_RELEASE_RP, 0, 4) + bytes(4)  # PS3.8 9.3.7


def encode_abort(source: int = ABORT_SOURCE_SERVICE_USER, reason: int = 0) -> bytes:
    return PDU_HEADER.pack(PduType.A_ABORT, 0, 4) + bytes((0, 0, source, reason))  # PS3.8 9.3.8


def encode_p_data(context_id: int, is_command: bool, payload: bytes, max_pdu_bytes: int) -> list[bytes]:
    """P-DATA-TF PDUs (PS3.8 9.3.5) carrying `payload` in fragments that fit the peer's maximum PDU length
    (0 means unlimited), one PDV per PDU."""
    fragment_max = (max_pdu_bytes - PDV_HEADER_BYTES) if max_pdu_bytes else max(len(payload), 1)
    control = MCH_COMMAND if is_command else 0
    pdus = []
    for start in range(0, max(len(payload), 1), fragment_max):
        fragment = payload[start:start + fragment_max]
        last = start + fragment_max >= len(payload)
        pdv = PDV_HEADER.pack(len(fragment) + 2, context_id, control | (MCH_LAST_FRAGMENT if last else 0))
        pdus.append(PDU_HEADER.pack(PduType.P_DATA_TF, 0, len(pdv) + len(fragment)) + pdv + fragment)
    return pdus


# -- DIMSE command sets (PS3.7 9.3, E.1) ---------------------------------------------------------------------


class CommandField(IntEnum):
    """(0000,0100) Command Field values (PS3.7 E.1-1)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_CANCEL_RQ = 0x0FFF


class CommandTag(IntEnum):
    """Command elements (PS3.7 E.1-1), as (group << 16 | element)."""

    COMMAND_GROUP_LENGTH = 0x00000000
    AFFECTED_SOP_CLASS_UID = 0x00000002
    COMMAND_FIELD = 0x00000100
    MESSAGE_ID = 0x00000110
    MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
    PRIORITY = 0x00000700
    COMMAND_DATA_SET_TYPE = 0x00000800
    STATUS = 0x00000900
    AFFECTED_SOP_INSTANCE_UID = 0x00001000
    NUMBER_OF_REMAINING_SUBOPERATIONS = 0x00001020
    NUMBER_OF_COMPLETED_SUBOPERATIONS = 0x00001021
    NUMBER_OF_FAILED_SUBOPERATIONS = 0x00001022
    NUMBER_OF_WARNING_SUBOPERATIONS = 0x00001023


DATA_SET_ABSENT = 0x0101  # (0000,0800) Command Data Set Type: "no data set" (PS3.7 E.1-1); anything else: present
PRIORITY_MEDIUM = 0x0000
_US_TAGS = frozenset({CommandTag.COMMAND_FIELD, CommandTag.MESSAGE_ID, CommandTag.MESSAGE_ID_BEING_RESPONDED_TO,
                      CommandTag.PRIORITY, CommandTag.COMMAND_DATA_SET_TYPE, CommandTag.STATUS,
                      CommandTag.NUMBER_OF_REMAINING_SUBOPERATIONS, CommandTag.NUMBER_OF_COMPLETED_SUBOPERATIONS,
                      CommandTag.NUMBER_OF_FAILED_SUBOPERATIONS, CommandTag.NUMBER_OF_WARNING_SUBOPERATIONS})
_ELEMENT_HEADER = struct.Struct("<HHL")


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw  # PS3.5 6.2: UI padded with NUL to an even length


def _command_element(tag: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(tag >> 16, tag & 0xFFFF, len(value)) + value


def encode_command(elements: Mapping[CommandTag, int | str]) -> bytes:
    """An Implicit VR Little Endian command set with its group length; US values as int, UIDs as str."""
    body = b"".join(
        _command_element(tag, struct.pack("<H", value) if isinstance(value, int) else _uid_value(value))
        for tag, value in sorted(elements.items())
    )
    return _command_element(CommandTag.COMMAND_GROUP_LENGTH, struct.pack("<L", len(body))) + body


def decode_command(data: bytes | bytearray) -> dict[int, int | str]:
    """The command elements we know: US values as int, UIDs as str; others are skipped."""
    out: dict[int, int | str] = {}
    offset, end = 0, len(data)
    while offset + 8 <= end:
        group, element, length = _ELEMENT_HEADER.unpack_from(data, offset)
        offset += 8
        if offset + length > end:
            raise ProtocolError("a command element runs past the end of the command set")
        tag = group << 16 | element
        if tag in _US_TAGS and length == 2:
            out[tag] = struct.unpack_from("<H", data, offset)[0]
        elif tag in (CommandTag.AFFECTED_SOP_CLASS_UID, CommandTag.AFFECTED_SOP_INSTANCE_UID):
            out[tag] = _uid_text(data[offset:offset + length])
        offset += length
    return out


# -- File Meta Information (PS3.10 7.1), byte-identical to pydicom's write_file_meta_info -----------------------


def _explicit_short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                     implementation_class_uid: str, implementation_version_name: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (Explicit VR Little Endian)."""
    version = implementation_version_name.encode("ascii")
    if len(version) % 2:
        version += b" "  # SH is padded with a space
    body = (
        struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
        + _explicit_short(0x0002, 0x0002, b"UI", _uid_value(sop_class_uid))
        + _explicit_short(0x0002, 0x0003, b"UI", _uid_value(sop_instance_uid))
        + _explicit_short(0x0002, 0x0010, b"UI", _uid_value(transfer_syntax_uid))
        + _explicit_short(0x0002, 0x0012, b"UI", _uid_value(implementation_class_uid))
        + _explicit_short(0x0002, 0x0013, b"SH", version)
    )
    group_length = _explicit_short(0x0002, 0x0000, b"UL", struct.pack("<L", len(body)))
    return bytes(128) + b"DICM" + group_length + body
