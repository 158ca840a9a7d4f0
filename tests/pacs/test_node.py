"""Pure code: node addresses, AE titles, timeouts, presentation contexts, query identifiers, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, RTStructureSetStorage

from viewer.errors import PacsError
from viewer.pacs import Node, RetrieveResult, Timeouts, node_from_json, node_to_json, parse_node
from viewer.pacs.contexts import COMPRESSED_SYNTAXES, PRESENTATION_CONTEXTS_MAX, get_presentation_contexts
from viewer.pacs.node import validate_url
from viewer.pacs.query import (
    SOP_UIDS_PER_REQUEST_MAX,
    identifier_to_dict,
    query_identifier,
    retrieve_identifiers,
)
from viewer.pacs.retrieve import first_middle_last
from viewer.pacs.status import DimseStatus, describe_status
from viewer.settings import Settings, default_library_dir, load_settings, save_settings, settings_path


@pytest.mark.parametrize("text, ae, host, port", [
    ("ORTHANC@127.0.0.1:4242", "ORTHANC", "127.0.0.1", 4242),
    ("  PACS_1@pacs.example.org:104 ", "PACS_1", "pacs.example.org", 104),
    ("MY PACS@10.0.0.5:11112", "MY PACS", "10.0.0.5", 11112),
    ("A@[::1]:104", "A", "::1", 104),
    ("SIXTEEN_CHARS_AE@h:1", "SIXTEEN_CHARS_AE", "h", 1),
])
def test_parse_node(text: str, ae: str, host: str, port: int) -> None:
    node = parse_node(text, calling_ae="ME")
    assert (node.ae_title, node.host, node.port, node.calling_ae) == (ae, host, port, "ME")


@pytest.mark.parametrize("text", [
    "", "ORTHANC", "ORTHANC@127.0.0.1", "@127.0.0.1:4242", "A@:4242", "A@h:0", "A@h:65536", "A@h:-1",
    "SEVENTEEN_CHARS_A@h:1", "A\\B@h:1", "A\tB@h:1", "A\x00@h:1", "É@h:1", "   @h:1", "A@ho st:1",
    "A@-bad-.host:1", "A@h:1:2",
])
def test_parse_node_rejects(text: str) -> None:
    with pytest.raises(PacsError):
        parse_node(text)


def test_calling_ae_is_validated() -> None:
    with pytest.raises(PacsError, match="calling AE title"):
        parse_node("A@h:1", calling_ae="X" * 17)


def test_node_json_round_trip() -> None:
    node = Node("main", "ORTHANC", "127.0.0.1", 4242, calling_ae="VIEWER", dicomweb_url="http://h:8042/dicom-web/",
                timeouts=Timeouts(connect_s=1, acse_s=2, dimse_s=3, network_s=4))
    assert node.dicomweb_url == "http://h:8042/dicom-web"
    assert node_from_json(json.loads(json.dumps(node_to_json(node)))) == node


@pytest.mark.parametrize("bad", [{}, {"ae_title": "A", "host": "h"}, {"ae_title": "A", "host": "h", "port": "x"},
                                 {"ae_title": "A", "host": "h", "port": 1, "timeouts": {"dimse_s": -1}}, []])
def test_node_from_bad_json(bad: object) -> None:
    with pytest.raises(PacsError):
        node_from_json(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"connect_s": 0}, {"dimse_s": -1}, {"acse_s": float("nan")}, {"network_s": True}])
def test_timeouts_must_be_positive(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Timeouts(**kwargs)


def test_retrieve_results_add_up() -> None:
    total = RetrieveResult(completed=2, bytes=10, sop_instance_uids=("1",)) + RetrieveResult(failed=1, warnings=1,
                                                                                            skipped_already_held=3)
    assert (total.completed, total.failed, total.warnings, total.skipped_already_held, total.bytes) == (2, 1, 1, 3, 10)
    assert "2 image(s) received" in total.describe()


@pytest.mark.parametrize("count, expected", [(0, []), (1, [0]), (2, [0, 1]), (3, [0, 1, 2]), (31, [0, 15, 30])])
def test_first_middle_last(count: int, expected: list[int]) -> None:
    assert first_middle_last(count) == expected


# -- presentation contexts (PS3.8 9.3.2.2: at most 128) --------------------------------------------------------


def _syntaxes_by_class(contexts) -> dict[str, list[list[str]]]:  # noqa: ANN001
    result: dict[str, list[list[str]]] = {}
    for cx in contexts:
        result.setdefault(cx.abstract_syntax, []).append(list(cx.transfer_syntaxes))
    return result


def test_default_get_contexts_fit_and_cover() -> None:
    contexts, roles = get_presentation_contexts()
    assert len(contexts) <= PRESENTATION_CONTEXTS_MAX
    by_class = _syntaxes_by_class(contexts)
    # CT and MR get one context per compressed syntax, so the peer can send each as stored.
    for uid in (CTImageStorage, MRImageStorage):
        assert [ExplicitVRLittleEndian, "1.2.840.10008.1.2"] in by_class[uid]
        assert {s[0] for s in by_class[uid] if len(s) == 1} == set(COMPRESSED_SYNTAXES)
    assert by_class[RTStructureSetStorage] == [[ExplicitVRLittleEndian, "1.2.840.10008.1.2"]]
    assert set(roles) == set(by_class) - {"1.2.840.10008.5.1.4.1.2.2.3"}
    assert [cx.context_id for cx in contexts] == list(range(1, 2 * len(contexts), 2))  # odd, 1-255 (PS3.8 9.3.2.2)


def test_contexts_for_the_study_classes() -> None:
    contexts, roles = get_presentation_contexts([CTImageStorage, "1.2.840.10008.5.1.4.1.1.7"])
    assert len(contexts) == 1 + 2 * (1 + len(COMPRESSED_SYNTAXES))
    assert [JPEGLosslessSV1] in _syntaxes_by_class(contexts)[CTImageStorage]
    assert [JPEG2000Lossless] in _syntaxes_by_class(contexts)["1.2.840.10008.5.1.4.1.1.7"]


def test_contexts_never_exceed_the_limit() -> None:
    many = [f"1.2.3.{i}" for i in range(300)]
    contexts, roles = get_presentation_contexts(many)
    assert len(contexts) == PRESENTATION_CONTEXTS_MAX and len(roles) == PRESENTATION_CONTEXTS_MAX - 1


# -- identifiers ------------------------------------------------------------------------------------------------


def test_query_identifier() -> None:
    ds = query_identifier("study", {"PatientName": "DOE*", "StudyDate": "20240101-20241231"})
    assert ds.QueryRetrieveLevel == "STUDY" and ds.PatientName == "DOE*" and ds.StudyDate == "20240101-20241231"
    assert "NumberOfStudyRelatedInstances" in ds and "ModalitiesInStudy" in ds
    assert identifier_to_dict(ds)["PatientName"] == "DOE*"
    assert "QueryRetrieveLevel" not in identifier_to_dict(ds)


@pytest.mark.parametrize("level, keys, message", [
    ("study", {"NotAKeyword": "x"}, "not a DICOM keyword"),
    ("study", {"ReferencedSeriesSequence": ""}, "sequence"),
    ("instance", {}, "not a query level"),
])
def test_query_identifier_rejects(level: str, keys: dict, message: str) -> None:
    with pytest.raises(PacsError, match=message):
        query_identifier(level, keys)


def test_retrieve_identifiers_batch_uid_lists() -> None:
    uids = [f"1.2.3.{i}" for i in range(SOP_UIDS_PER_REQUEST_MAX + 5)]
    identifiers = retrieve_identifiers("1.2", "1.2.3", uids)
    assert [len(ds.SOPInstanceUID) for ds in identifiers] == [SOP_UIDS_PER_REQUEST_MAX, 5]
    assert identifiers[0].QueryRetrieveLevel == "IMAGE" and identifiers[0].SeriesInstanceUID == "1.2.3"
    assert retrieve_identifiers("1.2")[0].QueryRetrieveLevel == "STUDY"
    assert retrieve_identifiers("1.2", "1.3")[0].QueryRetrieveLevel == "SERIES"


@pytest.mark.parametrize("args", [("1.2.x",), ("1.2", "../etc"), ("1.2", "1.3", ["1..2"]), ("1.2", None, ["1.2"])])
def test_retrieve_identifiers_reject(args: tuple) -> None:
    with pytest.raises(PacsError):
        retrieve_identifiers(*args)


def test_status_words() -> None:
    assert describe_status(DimseStatus.OUT_OF_RESOURCES) == "it is out of resources (status 0xA700)"
    assert describe_status(0xC123) == "it reported a failure (status 0xC123)"


# -- settings ---------------------------------------------------------------------------------------------------


def test_settings_missing_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.json")
    assert settings == Settings() and settings.warnings == ()
    assert (settings.default_via, settings.calling_ae, settings.storage_port) == ("get", "MIFAS", 11113)


def test_settings_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "settings.json"
    settings = Settings(nodes=[parse_node("ORTHANC@127.0.0.1:4242", name="lab")], library_dir="/data/lib",
                        default_via="move", calling_ae="VIEWER", storage_port=11200)
    assert save_settings(settings, path) == path
    assert load_settings(path) == settings
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # no temporary file left behind
    assert load_settings(path).node("lab").port == 4242


@pytest.mark.parametrize("text", ["{", "", "[]", "\xff\xfe", "null", '"text"'])
def test_damaged_settings_give_defaults_and_a_warning(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(text.encode("latin-1"))
    settings = load_settings(path)
    assert settings.nodes == [] and settings.default_via == "get"
    assert len(settings.warnings) == 1 and "defaults" in settings.warnings[0]


def test_partly_damaged_settings_keep_the_good_parts(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({
        "version": 1,
        "nodes": [{"name": "good", "ae_title": "A", "host": "h", "port": 104},
                  {"name": "bad", "ae_title": "A\\B", "host": "h", "port": 104},
                  {"name": "good", "ae_title": "B", "host": "h", "port": 105},
                  "junk"],
        "default_via": "carrier-pigeon",
        "storage_port": 70000,
        "calling_ae": "VIEWER",
    }))
    settings = load_settings(path)
    assert [n.name for n in settings.nodes] == ["good"]
    assert settings.default_via == "get" and settings.storage_port == 11113 and settings.calling_ae == "VIEWER"
    assert len(settings.warnings) == 5


def test_settings_location_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIFAS_CONFIG_DIR", str(tmp_path / "conf"))
    monkeypatch.setenv("MIFAS_LIBRARY_DIR", str(tmp_path / "lib"))
    assert settings_path() == tmp_path / "conf" / "settings.json"
    assert default_library_dir() == tmp_path / "lib"
    save_settings(Settings(calling_ae="ENVAE"))
    assert load_settings().calling_ae == "ENVAE"
    monkeypatch.delenv("MIFAS_LIBRARY_DIR")
    assert default_library_dir().parts[-2:] == ("mifas-viewer", "library")


def test_unreadable_settings_give_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.mkdir()  # reading a folder fails for root too
    settings = load_settings(path)
    assert settings.nodes == [] and "cannot be read" in settings.warnings[0]


def test_oversized_settings_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"calling_ae": "X", "pad": "' + "x" * (2 << 20) + '"}')
    settings = load_settings(path)
    assert settings.calling_ae == "MIFAS" and "too large" in settings.warnings[0]


@pytest.mark.parametrize("url", ["http://user:pass@pacs:8042/dicom-web", "https://token@pacs/dicom-web",
                                 "http://pacs/dicom-web?PatientName=Doe"])
def test_urls_with_credentials_or_a_query_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(PacsError) as caught:
        validate_url(url)
    text = str(caught.value)
    assert "user:pass@" not in text and "token@" not in text and "Doe" not in text
    if "@" in url:
        assert "must not carry a user name or password" in str(caught.value)
