"""User settings (no Qt): the PACS nodes, the library folder and retrieval defaults, in one JSON file.

Where the user's file lives, first match wins:

    the `path` argument of load_settings()/save_settings()
    $MIFAS_CONFIG_DIR/settings.json
    platformdirs.user_config_dir("mifas-viewer")/settings.json   (~/.config/mifas-viewer on Linux)

Every user inherits the system-wide defaults IT puts in ``/etc/mifas-viewer/settings.json``
(``$MIFAS_SYSTEM_CONFIG_DIR/settings.json`` when set; same format).  The system file is read first: each key it
sets replaces the built-in default, and each key the user's file sets replaces that.  Nodes are merged by name:
the system's nodes come first, a user's node with the same name replaces the system's, the user's other nodes
follow.  Saving writes only what the user changed: a node identical to the system's node of that name, and a
key whose value is the inherited one, stay out of the user's file, so that what IT changes later reaches the
user.  (The other ``*.json`` files in that folder are cluster profiles: :mod:`viewer.pacs.cluster`.)

Settings are read once, into a typed :class:`Settings`, and passed to whoever needs them.  Reading never
fails: a missing file gives the defaults; a damaged file (or a damaged entry in it) gives the defaults for
what could not be read and a sentence in ``Settings.warnings`` for the user.  Writing is atomic (temporary
file, fsync, rename), so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from viewer.errors import MifasError
from viewer.json_input import parse_json
from viewer.limits import SETTINGS_BYTES_MAX

# IT's folder ($MIFAS_SYSTEM_CONFIG_DIR, else /etc/mifas-viewer) is the folder the cluster profiles are read from:
# one definition, in viewer.pacs.cluster, re-exported here under the settings' names.
from viewer.pacs.cluster import SYSTEM_CONFIG_DIR_ENV  # noqa: F401
from viewer.pacs.cluster import SYSTEM_PROFILE_DIR as SYSTEM_CONFIG_DIR  # noqa: F401
from viewer.pacs.cluster import system_profile_dir as system_config_dir
from viewer.pacs.node import (
    DEFAULT_CALLING_AE,
    DEFAULT_STORAGE_PORT,
    Node,
    node_from_json,
    node_to_json,
    validate_ae_title,
    validate_port,
)
from viewer.private import private_dir

APP_NAME = "mifas-viewer"
SETTINGS_FILE_NAME = "settings.json"
SYSTEM_SETTINGS_FILE_NAME = SETTINGS_FILE_NAME  # /etc/mifas-viewer/settings.json (never read as cluster profiles)
SCALAR_KEYS = ("library_dir", "default_via", "calling_ae", "storage_port", "volume_memory_mib")
SETTINGS_VERSION = 1
NODES_MAX = 1000
VIAS = ("get", "move", "wado")
VOLUME_MEMORY_MIB_DEFAULT = 2048
VOLUME_MEMORY_MIB_RANGE = (64, 65536)


@dataclass
class Settings:
    nodes: list[Node] = field(default_factory=list)
    library_dir: str | None = None  # None: default_library_dir()
    default_via: str = "get"  # "get", "move" or "wado"
    calling_ae: str = DEFAULT_CALLING_AE
    storage_port: int = DEFAULT_STORAGE_PORT  # our Storage SCP for C-MOVE
    volume_memory_mib: int = VOLUME_MEMORY_MIB_DEFAULT  # the cap for one 3D volume (larger ones are downsampled)
    warnings: tuple[str, ...] = field(default=(), compare=False)  # what could not be read; never saved
    # What this user inherits (the system-wide file over the built-in defaults), as load_settings() found it;
    # None for settings made in code, which are saved whole.
    inherited: Settings | None = field(default=None, compare=False, repr=False)

    def node(self, name: str) -> Node | None:
        """The saved node called `name` (exact match), or None."""
        return next((n for n in self.nodes if n.name == name), None)

    def is_system_node(self, name: str) -> bool:
        """True when the node called `name` is the system-wide one, as IT defined it (not overridden)."""
        ours, theirs = self.node(name), self.inherited.node(name) if self.inherited is not None else None
        return ours is not None and ours == theirs


def config_dir() -> Path:
    override = os.environ.get("MIFAS_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))


def settings_path(path: Path | str | None = None) -> Path:
    return Path(path) if path is not None else config_dir() / SETTINGS_FILE_NAME


def system_settings_path() -> Path:
    return system_config_dir() / SYSTEM_SETTINGS_FILE_NAME


def default_library_dir() -> Path:
    """$MIFAS_LIBRARY_DIR, else platformdirs.user_data_dir("mifas-viewer")/library."""
    override = os.environ.get("MIFAS_LIBRARY_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME)) / "library"


def settings_to_json(settings: Settings) -> dict[str, Any]:
    """The user's file: everything, or with ``settings.inherited`` known, only what differs from it."""
    base = settings.inherited
    out: dict[str, Any] = {"version": SETTINGS_VERSION,
                           "nodes": [node_to_json(n) for n in settings.nodes if not settings.is_system_node(n.name)]}
    for key in SCALAR_KEYS:
        if base is None or getattr(settings, key) != getattr(base, key):
            out[key] = getattr(settings, key)
    return out


def settings_from_json(data: Any, where: str = "the settings", defaults: Settings | None = None) -> Settings:
    """Build Settings from parsed JSON, keeping every part that is valid; the rest become warnings.  What the
    JSON leaves out (or gets wrong) comes from `defaults` (the built-in defaults when None); nodes are merged
    by name into the defaults' nodes."""
    defaults = defaults or Settings()
    if not isinstance(data, dict):
        return replace(defaults, warnings=(f"{where} are not a JSON object; the defaults are used.",))
    warnings: list[str] = []
    version = data.get("version", SETTINGS_VERSION)
    if not isinstance(version, int) or version > SETTINGS_VERSION:
        warnings.append(f"{where} were written by a newer MIFAS Viewer; only known settings were read.")

    def pick(key: str, check: Any, default: Any) -> Any:
        if key not in data or data[key] is None:
            return default
        try:
            return check(data[key])
        except (MifasError, TypeError, ValueError) as exc:
            warnings.append(f"The setting '{key}' is invalid ({exc}); the default is used.")
            return default

    def check_via(value: Any) -> str:
        if value not in VIAS:
            raise ValueError(f"not one of {', '.join(VIAS)}")
        return str(value)

    def check_dir(value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise ValueError("not a folder path")
        return value

    def check_mib(value: Any) -> int:
        lo, hi = VOLUME_MEMORY_MIB_RANGE
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"not a whole number of MiB between {lo} and {hi}")
        return value

    nodes: list[Node] = []
    raw_nodes = data.get("nodes", [])
    if not isinstance(raw_nodes, list):
        warnings.append("The saved PACS nodes are damaged and were ignored.")
        raw_nodes = []
    for index, raw in enumerate(raw_nodes[:NODES_MAX]):
        try:
            node = node_from_json(raw)
        except (MifasError, TypeError, ValueError) as exc:
            label = raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else f"#{index + 1}"
            warnings.append(f"The saved PACS node {label} is damaged and was ignored ({exc}).")
            continue
        if any(n.name == node.name for n in nodes):
            warnings.append(f"The saved PACS node name '{node.name}' appears twice; the second was ignored.")
            continue
        nodes.append(node)
    if len(raw_nodes) > NODES_MAX:
        warnings.append(f"Only the first {NODES_MAX} saved PACS nodes were read.")
    names = {n.name for n in nodes}
    merged = [next(n for n in nodes if n.name == d.name) if d.name in names else d for d in defaults.nodes]
    merged += [n for n in nodes if n.name not in {d.name for d in defaults.nodes}]
    return Settings(
        nodes=merged[:NODES_MAX],
        library_dir=pick("library_dir", check_dir, defaults.library_dir),
        default_via=pick("default_via", check_via, defaults.default_via),
        calling_ae=pick("calling_ae", lambda v: validate_ae_title(v, "calling AE title"), defaults.calling_ae),
        storage_port=pick("storage_port", validate_port, defaults.storage_port),
        volume_memory_mib=pick("volume_memory_mib", check_mib, defaults.volume_memory_mib),
        warnings=tuple(warnings),
    )


_SYSTEM = object()  # load_settings(system_path=...) default: system_settings_path() at call time


_MISSING = object()  # read_json_file: no file (or none that could be read)


def read_json_file(file: Path, what: str) -> tuple[Any, str | None]:
    """(parsed JSON or _MISSING, a warning or None); a missing file is (_MISSING, None)."""
    try:
        with open(file, "rb") as fp:
            raw = fp.read(SETTINGS_BYTES_MAX + 1)
    except FileNotFoundError:
        return _MISSING, None
    except OSError as exc:
        return _MISSING, f"The {what} file {file} cannot be read ({exc.strerror}); the defaults are used."
    if len(raw) > SETTINGS_BYTES_MAX:
        return _MISSING, f"The {what} file {file} is too large to be ours; the defaults are used."
    try:
        return parse_json(raw.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError):
        return _MISSING, f"The {what} file {file} is damaged (not valid JSON); the defaults are used."


def load_settings(path: Path | str | None = None, system_path: Path | str | None | object = _SYSTEM) -> Settings:
    """Read the system-wide defaults (`system_path`, by default ``system_settings_path()``; None: none), then
    the user's settings over them; never raises for a missing, unreadable or damaged file (see
    ``Settings.warnings``)."""
    warnings: list[str] = []
    inherited = Settings()
    if system_path is not None:
        system_file = system_settings_path() if system_path is _SYSTEM else Path(system_path)  # type: ignore[arg-type]
        data, problem = read_json_file(system_file, "system-wide settings")
        warnings += [problem] if problem else []
        if data is not _MISSING:
            inherited = settings_from_json(data, where=f"The system-wide settings in {system_file}")
            warnings += [w if str(system_file) in w else f"In the system-wide settings {system_file}: {w}"
                         for w in inherited.warnings]
            inherited = replace(inherited, warnings=())
    file = settings_path(path)
    data, problem = read_json_file(file, "settings")
    warnings += [problem] if problem else []
    settings = inherited if data is _MISSING else settings_from_json(data, where=f"The settings in {file}",
                                                                 defaults=inherited)
    return replace(settings, warnings=(*warnings, *(settings.warnings if data is not _MISSING else ())),
                   inherited=inherited)


def save_settings(settings: Settings, path: Path | str | None = None) -> Path:
    """Write the settings atomically; return the path written.  Raises MifasError when it cannot."""
    file = settings_path(path)
    text = json.dumps(settings_to_json(settings), indent=2, ensure_ascii=False) + "\n"
    tmp_name = None
    try:
        private_dir(file.parent)  # 0700 when we make it; the file itself is 0600 (mkstemp's)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=file.parent, prefix=".settings-",
                                         suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, file)
        tmp_name = None
        fd = os.open(file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MifasError(f"The settings cannot be saved to {file} ({exc.strerror or exc}).") from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return file
