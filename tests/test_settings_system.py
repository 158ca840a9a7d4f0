"""System-wide defaults (/etc/mifas-viewer) that every user inherits and may override: settings and nodes in
settings.json, cluster profiles in the folder's other *.json files.  Temporary folders only: the real /etc is
never read (tests/conftest.py points MIFAS_SYSTEM_CONFIG_DIR at an empty folder for every test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from viewer.pacs.cluster import SYSTEM_PROFILE_DIR, load_profiles
from viewer.pacs.node import Node
from viewer.settings import (
    Settings,
    load_settings,
    save_settings,
    system_config_dir,
    system_settings_path,
)

SHIPPED = Path(__file__).resolve().parents[1] / "packaging/deb/etc/settings.json"
EXAMPLE = Path(__file__).resolve().parents[1] / "packaging/deb/examples/settings.json"
EXAMPLE_CLUSTERS = Path(__file__).resolve().parents[1] / "packaging/deb/examples/clusters.json"


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def node_json(name: str, host: str, port: int = 104, ae: str = "PACS") -> dict:
    return {"name": name, "ae_title": ae, "host": host, "port": port}


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "etc-mifas"
    folder.mkdir()
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(folder))
    return folder


def test_the_suite_never_reads_the_real_etc() -> None:
    assert system_config_dir() != Path("/etc/mifas-viewer")
    assert not system_settings_path().exists()


def test_system_defaults_are_inherited(system: Path, tmp_path: Path) -> None:
    write(system / "settings.json", {"version": 1, "nodes": [node_json("Radiology", "pacs.example.org")],
                                     "calling_ae": "SITE_WS", "volume_memory_mib": 4096})
    settings = load_settings(tmp_path / "user" / "settings.json")  # the user has no file yet
    assert settings.calling_ae == "SITE_WS"
    assert settings.volume_memory_mib == 4096
    assert settings.default_via == "get"  # not set by IT: the built-in default
    assert [n.name for n in settings.nodes] == ["Radiology"]
    assert settings.is_system_node("Radiology")
    assert settings.warnings == ()


def test_user_overrides_key_by_key_and_node_by_name(system: Path, tmp_path: Path) -> None:
    write(system / "settings.json", {"nodes": [node_json("Radiology", "pacs.example.org"),
                                               node_json("Archive", "192.0.2.20", 11112)],
                                     "calling_ae": "SITE_WS", "storage_port": 11200})
    user = write(tmp_path / "user.json", {"version": 1, "calling_ae": "MY_WS",
                                          "nodes": [node_json("Archive", "192.0.2.21", 4242, "MINE"),
                                                    node_json("Mine", "127.0.0.1", 4242)]})
    settings = load_settings(user)
    assert settings.calling_ae == "MY_WS"  # the user's key wins
    assert settings.storage_port == 11200  # the user did not set it: IT's value
    assert [(n.name, n.host) for n in settings.nodes] == [("Radiology", "pacs.example.org"),
                                                         ("Archive", "192.0.2.21"), ("Mine", "127.0.0.1")]
    assert settings.is_system_node("Radiology")
    assert not settings.is_system_node("Archive") and not settings.is_system_node("Mine")


def test_saving_keeps_system_nodes_and_inherited_values_out_of_the_user_file(system: Path, tmp_path: Path) -> None:
    write(system / "settings.json", {"nodes": [node_json("Radiology", "pacs.example.org")], "calling_ae": "SITE_WS"})
    user = tmp_path / "user.json"
    settings = load_settings(user)
    mine = Node(name="Mine", ae_title="ORTHANC", host="127.0.0.1", port=4242)
    save_settings(Settings(nodes=[*settings.nodes, mine], calling_ae=settings.calling_ae, default_via="wado",
                           inherited=settings.inherited), user)
    written = json.loads(user.read_text())
    assert [n["name"] for n in written["nodes"]] == ["Mine"]
    assert "calling_ae" not in written  # inherited: IT may still change it
    assert written["default_via"] == "wado"
    # IT changes its defaults later: the user follows them, and keeps what they set themselves.
    write(system / "settings.json", {"nodes": [node_json("Radiology", "pacs2.example.org")], "calling_ae": "NEW_WS"})
    again = load_settings(user)
    assert again.calling_ae == "NEW_WS"
    assert again.default_via == "wado"
    assert [(n.name, n.host) for n in again.nodes] == [("Radiology", "pacs2.example.org"), ("Mine", "127.0.0.1")]


def test_an_edited_system_node_is_saved_as_the_users_override(system: Path, tmp_path: Path) -> None:
    write(system / "settings.json", {"nodes": [node_json("Radiology", "pacs.example.org")]})
    user = tmp_path / "user.json"
    settings = load_settings(user)
    edited = Node(name="Radiology", ae_title="PACS", host="pacs.example.org", port=11112)
    save_settings(Settings(nodes=[edited], inherited=settings.inherited), user)
    assert [n["port"] for n in json.loads(user.read_text())["nodes"]] == [11112]
    assert load_settings(user).node("Radiology").port == 11112


def test_settings_made_in_code_are_saved_whole(system: Path, tmp_path: Path) -> None:
    write(system / "settings.json", {"calling_ae": "SITE_WS"})
    path = save_settings(Settings(calling_ae="MIFAS"), tmp_path / "user.json")
    assert json.loads(path.read_text())["calling_ae"] == "MIFAS"
    assert load_settings(path).calling_ae == "MIFAS"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", json.dumps({"calling_ae": "way too long an AE title",
                                                                           "nodes": [{"name": "broken"}]}).encode()])
def test_a_damaged_system_file_warns_and_never_stops_the_user(system: Path, tmp_path: Path, content: bytes) -> None:
    (system / "settings.json").write_bytes(content)
    user = write(tmp_path / "user.json", {"nodes": [node_json("Mine", "127.0.0.1", 4242)]})
    settings = load_settings(user)
    assert [n.name for n in settings.nodes] == ["Mine"]
    assert settings.calling_ae == "MIFAS"
    assert settings.warnings and all(isinstance(w, str) for w in settings.warnings)
    assert any("system-wide" in w for w in settings.warnings)


def test_no_system_file_when_asked(system: Path, tmp_path: Path) -> None:
    write(system / "settings.json", {"calling_ae": "SITE_WS"})
    assert load_settings(tmp_path / "absent.json", system_path=None).calling_ae == "MIFAS"
    other = write(tmp_path / "other-system.json", {"calling_ae": "OTHER"})
    assert load_settings(tmp_path / "absent.json", system_path=other).calling_ae == "OTHER"


def test_the_shipped_conffile_changes_nothing_and_the_example_is_valid(system: Path, tmp_path: Path) -> None:
    (system / "settings.json").write_bytes(SHIPPED.read_bytes())
    assert load_settings(tmp_path / "absent.json") == Settings()
    assert load_settings(tmp_path / "absent.json").warnings == ()
    example = load_settings(tmp_path / "absent.json", system_path=EXAMPLE)
    assert example.warnings == ()
    assert [n.name for n in example.nodes] == ["Radiology PACS", "Teaching archive"]
    assert example.calling_ae == "MIFAS_WS"


def test_profiles_skip_the_settings_file_and_follow_the_override(system: Path, tmp_path: Path) -> None:
    (system / "settings.json").write_bytes(EXAMPLE.read_bytes())  # not a profile file: no warning about it
    (system / "clusters.json").write_bytes(EXAMPLE_CLUSTERS.read_bytes())
    loaded = load_profiles(tmp_path / "absent.json")  # the default system folder, moved by the variable
    assert set(loaded.profiles) == {"main-pacs"}
    assert loaded.origins["main-pacs"] == "system"
    assert loaded.warnings == ()
    assert set(load_profiles(None, SYSTEM_PROFILE_DIR).profiles) == {"main-pacs"}
    assert load_profiles(None, None).profiles == {}
    explicit = load_profiles(None, system)
    assert set(explicit.profiles) == {"main-pacs"} and explicit.warnings == ()
