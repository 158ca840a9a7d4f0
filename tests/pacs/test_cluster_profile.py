"""Cluster profiles: validation, JSON round trip, system defaults overridden by the user's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from viewer.errors import PacsError
from viewer.pacs.cluster import (
    CLUSTER_TIMEOUTS,
    ClusterAddress,
    ClusterProfile,
    load_profiles,
    profile_from_json,
    profile_to_json,
    save_profiles,
)
from viewer.pacs.retry import RetryPolicy

ENTRY = {
    "name": "main",
    "ae_title": "ORTHANC",
    "calling_ae": "MIFAS",
    "vip": {"host": "192.0.2.10", "port": 4242, "dicomweb_url": "http://192.0.2.10:8042/dicom-web"},
    "members": [{"name": "node A", "host": "192.0.2.11", "port": 4242},
                {"name": "node B", "host": "192.0.2.12", "port": 4242, "ae_title": "ORTHANCB"}],
    "transports": ["dimse", "dicomweb"],
    "retrieval": {"preferred": "get", "fallbacks": ["move", "wado"]},
    "timeouts": {"connect_s": 1.5},
    "retry": {"budget_s": 60},
}


def test_defaults_notice_a_dead_node_fast_without_cutting_transfers() -> None:
    profile = ClusterProfile("p", ClusterAddress("192.0.2.10", 4242))
    assert profile.timeouts.connect_s + profile.timeouts.acse_s <= 5
    assert profile.timeouts.dimse_s >= 10  # silence, not duration
    assert profile.retry.budget_s == 120
    assert profile.retrievals() == ("get", "move")  # no DICOMweb transport: no WADO


def test_candidates_are_vip_then_members() -> None:
    profile = profile_from_json(ENTRY)
    nodes = profile.candidates()
    assert [(n.name, n.host, n.ae_title) for n in nodes] == [
        ("virtual IP", "192.0.2.10", "ORTHANC"), ("node A", "192.0.2.11", "ORTHANC"),
        ("node B", "192.0.2.12", "ORTHANCB")]
    assert all(n.calling_ae == "MIFAS" for n in nodes)
    assert nodes[0].timeouts.connect_s == 1.5 and nodes[0].timeouts.acse_s == CLUSTER_TIMEOUTS.acse_s
    assert [n.name for n in profile.web_candidates()] == ["virtual IP"]
    assert profile.retrievals() == ("get", "move", "wado")
    assert profile.retry == RetryPolicy(budget_s=60)


def test_json_round_trip() -> None:
    profile = profile_from_json(ENTRY)
    assert profile_from_json(json.loads(json.dumps(profile_to_json(profile)))) == profile


@pytest.mark.parametrize(("change", "message"), [
    ({"vip": None}, "virtual IP entry must be a JSON object"),
    ({"vip": {"host": "192.0.2.10"}}, "lacks 'port'"),
    ({"vip": {"host": "bad host!", "port": 4242}}, "not a valid host name"),
    ({"vip": {"host": "192.0.2.10", "port": 70000}}, "outside 1-65535"),
    ({"ae_title": "A" * 17}, "longer than 16"),
    ({"transports": ["smoke-signals"]}, "use one or both of dimse, dicomweb"),
    ({"retrieval": {"preferred": "teleport"}}, "retrieval methods"),
    ({"transports": ["dicomweb"], "vip": {"host": "192.0.2.10", "port": 4242}}, "allows no retrieval method"),
    ({"retry": {"budget_s": -5}}, "budget_s"),
    ({"timeouts": {"connect_s": 0}}, "connect_s"),
    ({"members": [{"host": "192.0.2.11", "port": 4242, "colour": "red"}]}, "unknown keys: colour"),
])
def test_validation_messages_name_the_problem(change: dict, message: str) -> None:
    with pytest.raises(PacsError, match=message) as caught:
        profile_from_json({**ENTRY, **change})
    assert "Cluster profile 'main'" in str(caught.value)


def test_user_profiles_override_system_defaults(tmp_path: Path) -> None:
    system = tmp_path / "etc"
    system.mkdir()
    (system / "10-site.json").write_text(json.dumps({"profiles": [
        ENTRY, {**ENTRY, "name": "archive", "vip": {"host": "192.0.2.20", "port": 104}}]}))
    (system / "20-broken.json").write_text("{not json")
    user = tmp_path / "user" / "clusters.json"
    save_profiles(user, [profile_from_json({**ENTRY, "retry": {"budget_s": 30}}),
                         profile_from_json({**ENTRY, "name": "mine", "vip": {"host": "192.0.2.30", "port": 11112}})])
    loaded = load_profiles(user, system)
    assert set(loaded.profiles) == {"main", "archive", "mine"}
    assert loaded.origins == {"main": "user", "archive": "system", "mine": "user"}
    assert loaded.get("main").retry.budget_s == 30
    assert len(loaded.warnings) == 1 and "20-broken.json" in loaded.warnings[0]
    with pytest.raises(PacsError, match="no cluster profile named 'nope'"):
        loaded.get("nope")


def test_a_bad_profile_is_skipped_not_fatal(tmp_path: Path) -> None:
    user = tmp_path / "clusters.json"
    user.write_text(json.dumps({"profiles": [ENTRY, {**ENTRY, "name": "bad", "vip": {"host": "x", "port": 0}}]}))
    loaded = load_profiles(user, None)
    assert list(loaded.profiles) == ["main"]
    assert "Cluster profile 'bad'" in loaded.warnings[0] and "skipped" in loaded.warnings[0]


def test_missing_files_give_no_profiles(tmp_path: Path) -> None:
    loaded = load_profiles(tmp_path / "absent.json", tmp_path / "absent-dir")
    assert loaded.profiles == {} and loaded.warnings == ()
