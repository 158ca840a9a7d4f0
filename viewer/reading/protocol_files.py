"""Where hanging protocols come from (no Qt): shipped < system (IT) < user, a protocol overriding by name.

* shipped: ``viewer/resources/protocols.json`` (in the package);
* system: every ``*.json`` in ``/etc/mifas-viewer/protocols/`` (``$MIFAS_SYSTEM_CONFIG_DIR/protocols/``), in name
  order.  A folder, not a file beside ``settings.json``: the ``*.json`` files of ``/etc/mifas-viewer`` itself are
  cluster profiles (:mod:`viewer.pacs.cluster`);
* user: ``protocols.json`` in the user's configuration folder (:func:`viewer.settings.config_dir`).

Each file is ``{"version": 1, "protocols": [...]}`` (docs/user-guide.md, "Hanging protocols").  A protocol read
later replaces one of the same name (compared without case) read earlier, whole.  Reading never fails: a
missing file is nothing; a damaged file is one sentence in ``warnings`` and the others still load; a damaged
protocol is one sentence and the rest of its file still loads.  Files are bounded by
:data:`viewer.limits.SETTINGS_BYTES_MAX` and parsed with the JSON limits (:func:`viewer.settings.read_json_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from viewer.json_input import parse_json
from viewer.limits import PROTOCOL_FILES_MAX, PROTOCOLS_PER_FILE_MAX
from viewer.reading.protocols import Protocol, ProtocolError, protocol_from_json
from viewer.settings import _MISSING, config_dir, read_json_file, system_config_dir

PROTOCOLS_DIR_NAME = "protocols"  # in the system folder
USER_FILE_NAME = "protocols.json"  # in the user's configuration folder
PROTOCOLS_VERSION = 1


@dataclass(frozen=True)
class ProtocolSet:
    protocols: tuple[Protocol, ...]  # in loading order, overrides last
    warnings: tuple[str, ...] = ()

    def get(self, name: str) -> Protocol | None:
        return next((p for p in self.protocols if p.name.casefold() == name.casefold()), None)


def system_protocols_dir() -> Path:
    return system_config_dir() / PROTOCOLS_DIR_NAME


def user_protocols_path() -> Path:
    return config_dir() / USER_FILE_NAME


def _from_document(data, where: str, origin: str, warnings: list[str]) -> list[Protocol]:
    entries = data.get("protocols") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        warnings.append(f"The hanging protocols file {where} has no 'protocols' list and was ignored.")
        return []
    version = data.get("version", PROTOCOLS_VERSION)
    if not isinstance(version, int) or version > PROTOCOLS_VERSION:
        warnings.append(f"The hanging protocols file {where} was written for a newer MIFAS Viewer; "
                        "what could be read was used.")
    out = []
    for index, entry in enumerate(entries[:PROTOCOLS_PER_FILE_MAX]):
        try:
            out.append(protocol_from_json(entry, origin))
        except ProtocolError as exc:
            warnings.append(f"In the hanging protocols file {where}, protocol #{index + 1} was ignored ({exc}).")
    if len(entries) > PROTOCOLS_PER_FILE_MAX:
        warnings.append(f"Only the first {PROTOCOLS_PER_FILE_MAX} protocols of {where} were read.")
    return out


def shipped_protocols(warnings: list[str] | None = None) -> list[Protocol]:
    """The protocols that come with the viewer (a damaged copy is a warning, never a crash)."""
    warnings = [] if warnings is None else warnings
    try:
        text = resources.files("viewer").joinpath("resources", "protocols.json").read_text(encoding="utf-8")
        data = parse_json(text)
    except (OSError, ValueError) as exc:
        warnings.append(f"The shipped hanging protocols cannot be read ({type(exc).__name__}); none are used.")
        return []
    return _from_document(data, "shipped with the viewer", "shipped", warnings)


def _read(path: Path, origin: str, warnings: list[str]) -> list[Protocol]:
    data, problem = read_json_file(path, "hanging protocols")
    if problem:
        warnings.append(problem.replace("; the defaults are used.", "; its protocols are not used."))
    if data is _MISSING:
        return []
    return _from_document(data, str(path), origin, warnings)


def load_protocols(user_path: Path | None = None, system_dir: Path | None = None, *,
                   read_system: bool = True) -> ProtocolSet:
    """Shipped, then system (`system_dir`, default :func:`system_protocols_dir`), then the user's
    (`user_path`, default :func:`user_protocols_path`), each overriding the one before by name."""
    warnings: list[str] = []
    found: dict[str, Protocol] = {}

    def add(protocols: list[Protocol]) -> None:
        for protocol in protocols:
            found.pop(protocol.name.casefold(), None)  # an override goes last: it wins ties in choose()
            found[protocol.name.casefold()] = protocol

    add(shipped_protocols(warnings))
    if read_system:
        folder = system_dir if system_dir is not None else system_protocols_dir()
        try:
            files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        except OSError:
            files = []
            warnings.append(f"The hanging protocols folder {folder} cannot be read; its protocols are not used.")
        for path in files[:PROTOCOL_FILES_MAX]:
            add(_read(path, "system", warnings))
    add(_read(user_path if user_path is not None else user_protocols_path(), "user", warnings))
    return ProtocolSet(tuple(found.values()), tuple(warnings))
