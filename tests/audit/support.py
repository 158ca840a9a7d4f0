"""Reading what the audit repository received: RFC 5424 header, then the audit XML, checked against PS3.15."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache

from lxml import etree

from tests.audit.conftest import SCHEMA


@cache
def schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def assert_valid(xml: bytes) -> etree._Element:
    root = etree.fromstring(xml)
    checker = schema()
    assert checker.validate(root), f"not valid against PS3.15 A.5.1: {checker.error_log.last_error}"
    return root


@dataclass(frozen=True)
class Received:
    pri: str
    app_name: str
    msgid: str
    xml: etree._Element

    @property
    def event(self) -> str:
        """The event's name: its EventTypeCode (Application Start, ...) or else its EventID."""
        ident = self.xml.find("EventIdentification")
        code = ident.find("EventTypeCode")
        return (code if code is not None else ident.find("EventID")).get("originalText")

    def objects(self, role: str) -> list[etree._Element]:
        return [e for e in self.xml.findall("ParticipantObjectIdentification")
                if e.get("ParticipantObjectTypeCodeRole") == role]

    @property
    def study_uids(self) -> list[str]:
        return [e.get("ParticipantObjectID") for e in self.objects("3")]

    @property
    def patient_ids(self) -> list[str]:
        return [e.get("ParticipantObjectID") for e in self.objects("1")]

    @property
    def query(self) -> bytes | None:
        found = [e.findtext("ParticipantObjectQuery") for e in self.objects("24")]
        return base64.b64decode(found[0]) if found else None


def parse(line: bytes) -> Received:
    """One RFC 5424 message as rsyslog received it: <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG."""
    fields = line.split(b" ", 7)
    assert len(fields) == 8 and fields[0].endswith(b">1"), line[:200]
    pri, _, _, app, _, msgid, sd, msg = fields
    assert sd == b"-"
    return Received(pri[:-1].decode(), app.decode(), msgid.decode(), assert_valid(msg))
