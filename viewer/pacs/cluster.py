"""A PACS cluster profile: an active/passive pair (or more) behind one virtual IP, as the client sees it.

A :class:`ClusterProfile` names the virtual IP (VIP) and each member node's own address, the AE titles, the
transports allowed (DIMSE, DICOMweb), the retrieval order (C-GET, then C-MOVE or WADO-RS when C-GET is
refused), the timeouts and the retry budget.  :meth:`ClusterProfile.candidates` lists the nodes the client
tries: the VIP first, then the members (reached directly when the VIP does not answer).

Profiles live in JSON files: IT ships defaults in ``/etc/mifas-viewer/*.json`` (``$MIFAS_SYSTEM_CONFIG_DIR``
when set; ``settings.json`` there is the system-wide settings file of :mod:`viewer.settings`, never a profile
file) and each user may add or override profiles (by name, whole) in their own file.  :func:`load_profiles` reads both; a bad profile is
skipped with a warning naming the file and the problem, never a crash::

    {"profiles": [{"name": "main-pacs", "ae_title": "ORTHANC", "calling_ae": "MIFAS",
                   "vip": {"host": "192.0.2.10", "port": 4242, "dicomweb_url": "http://192.0.2.10:8042/dicom-web"},
                   "members": [{"name": "node A", "host": "192.0.2.11", "port": 4242},
                               {"name": "node B", "host": "192.0.2.12", "port": 4242, "ae_title": "ORTHANCB"}],
                   "transports": ["dimse", "dicomweb"],
                   "retrieval": {"preferred": "get", "fallbacks": ["move", "wado"]},
                   "timeouts": {"connect_s": 2, "acse_s": 3, "dimse_s": 10, "network_s": 30},
                   "retry": {"budget_s": 120}}]}

Timeouts: a dead node is noticed within ``connect_s`` (refused or no SYN-ACK) or ``acse_s`` (TCP accepted, no
DICOM answer); ``dimse_s`` is *silence* while a request is outstanding, restarted by every PDU or HTTP chunk,
so a slow transfer that keeps moving is never cut however long it takes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viewer.errors import PacsError
from viewer.json_input import parse_json
from viewer.limits import PROFILE_FILE_BYTES_MAX
from viewer.pacs.node import (
    DEFAULT_CALLING_AE,
    DEFAULT_STORAGE_PORT,
    Node,
    Timeouts,
    auth_from_json_lazily,
    auth_to_json_lazily,
    timeouts_from_json,
    timeouts_to_json,
    tls_from_json_lazily,
    tls_to_json_lazily,
    validate_ae_title,
    validate_host,
    validate_port,
    validate_url,
)
from viewer.pacs.retry import RetryPolicy
from viewer.private import private_dir

if TYPE_CHECKING:
    from viewer.pacs.tls import TlsSettings
    from viewer.pacs.webauth import WebAuth

SYSTEM_PROFILE_DIR = Path("/etc/mifas-viewer")  # stands for "the system folder": see system_profile_dir()
SYSTEM_CONFIG_DIR_ENV = "MIFAS_SYSTEM_CONFIG_DIR"
NOT_PROFILE_FILES = frozenset({"settings.json"})  # viewer.settings' system-wide defaults share the folder
PROFILES_MAX = 256
MEMBERS_MAX = 8
TRANSPORTS: tuple[str, ...] = ("dimse", "dicomweb")
RETRIEVALS: tuple[str, ...] = ("get", "move", "wado")
# Notice a dead node within 2-3 s (refused at once; no SYN-ACK in 2 s; TCP but no A-ASSOCIATE-AC in 3 s) without
# cutting a slow healthy transfer: dimse_s is silence, not duration.
CLUSTER_TIMEOUTS = Timeouts(connect_s=2.0, acse_s=3.0, dimse_s=10.0, network_s=30.0)
VIP_NAME = "virtual IP"
NAME_CHARS_MAX = 300  # a node's name (AET@HOST:PORT) when a single node is a cluster of one
PROFILE_NAME_CHARS_MAX = 64  # what a profile file may name a cluster
NODE_SOURCE_PREFIX = "node:"  # the name of a single node's profile: node:<via>:<node name> (jobs record it)
# A single node gets a short budget: it has no standby to wait for, only a restart of its PACS.
SINGLE_NODE_RETRY = RetryPolicy(budget_s=15.0)


@dataclass(frozen=True)
class ClusterAddress:
    """One way to reach the cluster: the VIP or a member.  ``ae_title`` overrides the profile's; ``rest_url``
    (optional, e.g. Orthanc's REST root) lets the health monitor tell which member serves the VIP."""

    host: str
    port: int
    name: str = ""
    ae_title: str | None = None
    dicomweb_url: str | None = None
    rest_url: str | None = None
    via: str | None = None  # a replica's retrieval method (None: the profile's preferred one)
    tls: TlsSettings | None = None  # overrides the profile's (e.g. a member whose certificate names it alone)

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", validate_host(self.host))
        object.__setattr__(self, "port", validate_port(self.port))
        if self.via is not None and self.via not in RETRIEVALS:
            raise PacsError(f"'{self.via}' is not a retrieval method; use one of {', '.join(RETRIEVALS)}.")
        if self.via == "wado" and not self.dicomweb_url:
            raise PacsError("An address retrieved with WADO-RS needs its 'dicomweb_url'.")
        if self.ae_title is not None:
            object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, "member AE title"))
        for key in ("dicomweb_url", "rest_url"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, validate_url(getattr(self, key)))
        if not isinstance(self.name, str):
            raise PacsError("A cluster address's name must be text.")


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    vip: ClusterAddress
    members: tuple[ClusterAddress, ...] = ()
    ae_title: str = "ORTHANC"
    calling_ae: str = DEFAULT_CALLING_AE
    transports: tuple[str, ...] = ("dimse",)
    preferred: str = "get"
    fallbacks: tuple[str, ...] = ("move", "wado")
    timeouts: Timeouts = CLUSTER_TIMEOUTS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    move_port: int = DEFAULT_STORAGE_PORT
    # Co-allocation (viewer.pacs.coalloc): other archives that hold the same studies, and whether the members
    # serve at once (an active/active cluster on shared storage) rather than one behind the virtual IP.
    replicas: tuple[ClusterAddress, ...] = ()
    active_active: bool = False
    tls: TlsSettings | None = None  # DICOM TLS to the VIP and every member (an address's own 'tls' overrides it)
    auth: WebAuth | None = None  # signing in to the DICOMweb server of the VIP and every member (viewer.pacs.webauth)

    @classmethod
    def of_node(cls, node: Node, via: str = "get", *, move_port: int = DEFAULT_STORAGE_PORT,
                retry: RetryPolicy | None = None) -> ClusterProfile:
        """A single node as a cluster of one: the retrieval engine treats both alike.  `via` is the only
        retrieval method (a single node's C-MOVE needs IT's configuration, so nothing falls back to it)."""
        if via not in RETRIEVALS:
            raise PacsError(f"'{via}' is not a retrieval method; use one of {', '.join(RETRIEVALS)}.")
        if via == "wado" and not node.dicomweb_url:
            raise PacsError(f"No DICOMweb URL is configured for the node '{node.name}'.")
        address = ClusterAddress(node.host, node.port, name=node.name, ae_title=node.ae_title,
                                 dicomweb_url=node.dicomweb_url, tls=node.tls)
        transports = ("dimse", "dicomweb") if node.dicomweb_url else ("dimse",)
        return cls(name=f"{NODE_SOURCE_PREFIX}{via}:{node.name}", vip=address, ae_title=node.ae_title, calling_ae=node.calling_ae,
                   transports=transports, preferred=via, fallbacks=(), timeouts=node.timeouts,
                   retry=retry or SINGLE_NODE_RETRY, move_port=move_port, auth=node.auth)

    @property
    def single_node(self) -> tuple[str, str] | None:
        """(via, node name) when this is a single node as a cluster of one (:meth:`of_node`), else None."""
        return node_source(self.name)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > NAME_CHARS_MAX:
            raise PacsError(f"A cluster profile needs a name of 1-{NAME_CHARS_MAX} characters.")
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "replicas", tuple(self.replicas))
        if len(self.members) > MEMBERS_MAX:
            raise PacsError(f"The cluster '{self.name}' lists {len(self.members)} members; at most {MEMBERS_MAX}.")
        if len(self.replicas) > MEMBERS_MAX:
            raise PacsError(f"The cluster '{self.name}' lists {len(self.replicas)} replicas; at most {MEMBERS_MAX}.")
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, "cluster AE title"))
        object.__setattr__(self, "calling_ae", validate_ae_title(self.calling_ae, "calling AE title"))
        object.__setattr__(self, "move_port", validate_port(self.move_port))
        transports = tuple(dict.fromkeys(self.transports))
        if not transports or any(t not in TRANSPORTS for t in transports):
            raise PacsError(f"The cluster '{self.name}' has transports {list(self.transports)}; "
                            f"use one or both of {', '.join(TRANSPORTS)}.")
        object.__setattr__(self, "transports", transports)
        order = (self.preferred, *self.fallbacks)
        if any(r not in RETRIEVALS for r in order):
            raise PacsError(f"The cluster '{self.name}' has retrieval methods {list(order)}; "
                            f"use {', '.join(RETRIEVALS)}.")
        object.__setattr__(self, "fallbacks", tuple(r for r in dict.fromkeys(self.fallbacks) if r != self.preferred))
        if not self.retrievals():
            raise PacsError(f"The cluster '{self.name}' allows no retrieval method with its transports "
                            f"({', '.join(transports)}) and addresses.")

    def retrievals(self) -> tuple[str, ...]:
        """The retrieval methods to use, in order, that the transports and addresses allow."""
        usable = []
        for method in (self.preferred, *self.fallbacks):
            if method == "wado" and ("dicomweb" not in self.transports or not self.vip_or_member_web()):
                continue
            if method in ("get", "move") and "dimse" not in self.transports:
                continue
            usable.append(method)
        return tuple(usable)

    def vip_or_member_web(self) -> bool:
        return any(a.dicomweb_url for a in (self.vip, *self.members))

    def addresses(self) -> tuple[ClusterAddress, ...]:
        return (self.vip, *self.members)

    def node_for(self, address: ClusterAddress, index: int = 0) -> Node:
        name = address.name or (VIP_NAME if address is self.vip else f"member {index}")
        return Node(name=name, ae_title=address.ae_title or self.ae_title, host=address.host, port=address.port,
                    calling_ae=self.calling_ae, dicomweb_url=address.dicomweb_url, timeouts=self.timeouts,
                    tls=address.tls or self.tls, auth=self.auth)

    def candidates(self) -> list[Node]:
        """The nodes to try, VIP first, then the members in the order given."""
        return [self.node_for(a, i) for i, a in enumerate(self.addresses())]

    def sources(self) -> list[tuple[Node, str]]:
        """Where a co-allocated retrieval fetches from at once, each with its method: the members of an
        active/active cluster, then the replicas.  Fewer than two: no co-allocation."""
        found: list[tuple[Node, str]] = []
        members = self.members if self.active_active else ()
        for index, address in enumerate((*members, *self.replicas)):
            node = self.node_for(address, index + 1)
            if address in self.replicas and not address.name:
                node = replace(node, name=f"replica {index + 1 - len(members)}")
            method = address.via or self.preferred
            if method == "move" or (method == "wado" and not address.dicomweb_url):
                continue  # C-MOVEs would share our one Storage SCP port: co-allocation uses C-GET and WADO-RS
            found.append((node, method))
        return found

    def web_candidates(self) -> list[Node]:
        """The candidates that have a DICOMweb URL (VIP first)."""
        return [n for n in self.candidates() if n.dicomweb_url]


def node_source(name: str) -> tuple[str, str] | None:
    """(via, node name) of a single node's profile name (``node:<via>:<node name>``), else None."""
    if not name.startswith(NODE_SOURCE_PREFIX):
        return None
    via, sep, node_name = name[len(NODE_SOURCE_PREFIX):].partition(":")
    return (via, node_name) if sep and via in RETRIEVALS and node_name else None


def source_name(name: str) -> str:
    """How a source is named to the user: the node's name for a single node, else the cluster profile's."""
    single = node_source(name)
    return single[1] if single is not None else name


# -- JSON -------------------------------------------------------------------------------------------------


def _address_from_json(data: Any, what: str) -> ClusterAddress:
    if not isinstance(data, Mapping):
        raise PacsError(f"The {what} must be a JSON object with host and port.")
    if ("host" not in data or "port" not in data) and isinstance(data.get("dicomweb_url"), str):
        from viewer.pacs.reach import url_address  # a DICOMweb-only replica: its address is the URL's

        host, port = url_address(validate_url(data["dicomweb_url"]))
        data = {"host": host, "port": port, **data}
    for key in ("host", "port"):
        if key not in data:
            raise PacsError(f"The {what} lacks '{key}'.")
    unknown = set(data) - {"host", "port", "name", "ae_title", "dicomweb_url", "rest_url", "via", "tls"}
    if unknown:
        raise PacsError(f"The {what} has unknown keys: {', '.join(sorted(unknown))}.")
    return ClusterAddress(host=data["host"], port=data["port"], name=str(data.get("name") or ""),
                          ae_title=data.get("ae_title") or None, dicomweb_url=data.get("dicomweb_url") or None,
                          rest_url=data.get("rest_url") or None, via=data.get("via") or None,
                          tls=tls_from_json_lazily(data.get("tls")))


def _address_to_json(address: ClusterAddress) -> dict[str, Any]:
    out: dict[str, Any] = {"host": address.host, "port": address.port}
    for key in ("name", "ae_title", "dicomweb_url", "rest_url", "via"):
        if getattr(address, key):
            out[key] = getattr(address, key)
    if address.tls is not None:
        out["tls"] = tls_to_json_lazily(address.tls)
    return out


def _retry_from_json(data: Any) -> RetryPolicy:
    if data is None:
        return RetryPolicy()
    if not isinstance(data, Mapping):
        raise PacsError("'retry' must be a JSON object.")
    known = {k: data[k] for k in ("budget_s", "backoff_initial_s", "backoff_max_s", "jitter", "attempts_max")
             if k in data}
    try:
        return RetryPolicy(**known)
    except (TypeError, ValueError) as exc:
        raise PacsError(str(exc)) from None


def profile_from_json(data: Any) -> ClusterProfile:
    """One profile from its JSON object; any problem raises PacsError naming the field."""
    if not isinstance(data, Mapping):
        raise PacsError("A cluster profile must be a JSON object.")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PacsError("A cluster profile lacks its 'name'.")
    if len(name.strip()) > PROFILE_NAME_CHARS_MAX or node_source(name.strip()) is not None:
        raise PacsError(f"A cluster profile needs a name of 1-{PROFILE_NAME_CHARS_MAX} characters.")
    try:
        members = data.get("members", [])
        replicas = data.get("replicas", [])
        if not isinstance(members, list) or not isinstance(replicas, list):
            raise PacsError("'members' and 'replicas' must be lists.")
        active_active = data.get("active_active", False)
        if not isinstance(active_active, bool):
            raise PacsError("'active_active' must be true or false.")
        retrieval = data.get("retrieval", {})
        if not isinstance(retrieval, Mapping):
            raise PacsError("'retrieval' must be a JSON object.")
        transports = data.get("transports", ["dimse"])
        fallbacks = retrieval.get("fallbacks", ["move", "wado"])
        if not isinstance(transports, list) or not isinstance(fallbacks, list):
            raise PacsError("'transports' and 'retrieval.fallbacks' must be lists.")
        timeouts = CLUSTER_TIMEOUTS
        raw_timeouts = data.get("timeouts")
        if raw_timeouts is not None:  # validated; fields left out keep the cluster defaults, not the node ones
            given = timeouts_from_json(raw_timeouts)
            timeouts = replace(CLUSTER_TIMEOUTS, **{k: getattr(given, k) for k in raw_timeouts
                                                    if k in ("connect_s", "acse_s", "dimse_s", "network_s")})
        return ClusterProfile(
            name=name.strip(),
            vip=_address_from_json(data.get("vip"), "virtual IP entry"),
            members=tuple(_address_from_json(m, f"member {i + 1}") for i, m in enumerate(members)),
            ae_title=data.get("ae_title", "ORTHANC"),
            calling_ae=data.get("calling_ae", DEFAULT_CALLING_AE),
            transports=tuple(transports),
            preferred=retrieval.get("preferred", "get"),
            fallbacks=tuple(fallbacks),
            timeouts=timeouts,
            retry=_retry_from_json(data.get("retry")),
            move_port=data.get("move_port", DEFAULT_STORAGE_PORT),
            replicas=tuple(_address_from_json(m, f"replica {i + 1}") for i, m in enumerate(replicas)),
            active_active=active_active,
            tls=tls_from_json_lazily(data.get("tls")),
            auth=auth_from_json_lazily(data.get("auth")),
        )
    except PacsError as exc:
        raise PacsError(f"Cluster profile '{name}': {exc}") from None


def profile_to_json(profile: ClusterProfile) -> dict[str, Any]:
    r = profile.retry
    return {
        "name": profile.name,
        "vip": _address_to_json(profile.vip),
        "members": [_address_to_json(m) for m in profile.members],
        "ae_title": profile.ae_title,
        "calling_ae": profile.calling_ae,
        "transports": list(profile.transports),
        "retrieval": {"preferred": profile.preferred, "fallbacks": list(profile.fallbacks)},
        "timeouts": timeouts_to_json(profile.timeouts),
        "retry": {"budget_s": r.budget_s, "backoff_initial_s": r.backoff_initial_s, "backoff_max_s": r.backoff_max_s,
                  "jitter": r.jitter, "attempts_max": r.attempts_max},
        "move_port": profile.move_port,
        "replicas": [_address_to_json(r) for r in profile.replicas],
        "active_active": profile.active_active,
        **({"tls": tls_to_json_lazily(profile.tls)} if profile.tls is not None else {}),
        **({"auth": auth_to_json_lazily(profile.auth)} if profile.auth is not None else {}),
    }


@dataclass(frozen=True)
class ProfileSet:
    """Profiles by name, where each came from (``"system"`` or ``"user"``), and what was skipped and why."""

    profiles: Mapping[str, ClusterProfile]
    origins: Mapping[str, str]
    warnings: tuple[str, ...] = ()

    def get(self, name: str) -> ClusterProfile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise PacsError(f"There is no cluster profile named '{name}' (known: {known}).") from None


def _read_file(path: Path, warnings: list[str]) -> list[ClusterProfile]:
    try:
        if path.stat().st_size > PROFILE_FILE_BYTES_MAX:
            warnings.append(f"{path}: larger than {PROFILE_FILE_BYTES_MAX >> 10} KiB; ignored.")
            return []
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.append(f"{path}: cannot be read ({exc}); ignored.")
        return []
    entries = data.get("profiles") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        warnings.append(f"{path}: has no 'profiles' list; ignored.")
        return []
    profiles = []
    for entry in entries[:PROFILES_MAX]:
        try:
            profiles.append(profile_from_json(entry))
        except PacsError as exc:
            warnings.append(f"{path}: {exc} This profile was skipped.")
    if len(entries) > PROFILES_MAX:
        warnings.append(f"{path}: only the first {PROFILES_MAX} profiles were read.")
    return profiles


def system_profile_dir() -> Path:
    """$MIFAS_SYSTEM_CONFIG_DIR, else /etc/mifas-viewer (the same folder as viewer.settings.system_config_dir)."""
    override = os.environ.get(SYSTEM_CONFIG_DIR_ENV)
    return Path(override) if override else SYSTEM_PROFILE_DIR


def load_profiles(user_path: Path | str | None, system_dir: Path | str | None = SYSTEM_PROFILE_DIR) -> ProfileSet:
    """The system-wide profiles (``system_dir/*.json`` in name order, except ``settings.json``), then the
    user's, which override a system profile of the same name.  Missing files are fine; bad ones are reported in
    ``warnings``.  `system_dir` = :data:`SYSTEM_PROFILE_DIR` (the default) means :func:`system_profile_dir`,
    so ``$MIFAS_SYSTEM_CONFIG_DIR`` moves it for every caller; None reads no system profiles."""
    warnings: list[str] = []
    profiles: dict[str, ClusterProfile] = {}
    origins: dict[str, str] = {}
    if system_dir is not None and Path(system_dir) == SYSTEM_PROFILE_DIR:
        system_dir = system_profile_dir()
    if system_dir is not None and Path(system_dir).is_dir():
        paths = [p for p in sorted(Path(system_dir).glob("*.json")) if p.name not in NOT_PROFILE_FILES]
        for path in paths[:PROFILES_MAX]:
            for profile in _read_file(path, warnings):
                profiles[profile.name], origins[profile.name] = profile, "system"
    if user_path is not None:
        for profile in _read_file(Path(user_path), warnings):
            profiles[profile.name], origins[profile.name] = profile, "user"
    return ProfileSet(profiles, origins, tuple(warnings))


def save_profiles(path: Path | str, profiles: Iterable[ClusterProfile]) -> None:
    """Write `profiles` (the user's own) to `path` atomically."""
    path = Path(path)
    items: Sequence[ClusterProfile] = list(profiles)
    if len(items) > PROFILES_MAX:
        raise PacsError(f"At most {PROFILES_MAX} cluster profiles can be saved.")
    text = json.dumps({"profiles": [profile_to_json(p) for p in items]}, indent=2)
    try:
        private_dir(path.parent)  # 0700 when we make it; the file itself is 0600 (mkstemp's)
    except OSError as exc:
        raise PacsError(f"Cannot save the cluster profiles to {path}: {exc.strerror or exc}.") from exc
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".profiles-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PacsError(f"Cannot save the cluster profiles to {path}: {exc.strerror or exc}.") from exc
