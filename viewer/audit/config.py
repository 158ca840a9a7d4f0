"""Where the audit trail goes: IT's ``"audit"`` object in ``/etc/mifas-viewer/settings.json`` (no Qt).

Only the system-wide file is read: a user cannot turn the audit trail off, nor point it elsewhere, from their own
settings.  Reading never fails: a damaged entry gives the defaults for it and a sentence in
``AuditConfig.warnings`` (no patient data can be in it: this file holds none).

    "audit": {
      "repository": "tls://audit.example.org:6514",   # or udp://host:514; absent: the local log only
      "ca_file": "/etc/mifas-viewer/audit-ca.pem",    # absent: the system's CA store
      "cert_file": "...", "key_file": "...",          # our client certificate, when the repository asks for one
      "server_name": "audit.example.org",             # the name the repository's certificate holds (default: host)
      "source_id": "WS-RAD-12", "enterprise_site_id": "General Hospital",
      "local_days": 90, "local_max_mib": 256, "queue_max_mib": 64
    }
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

AUDIT_DIR_ENV = "MIFAS_AUDIT_DIR"
APP_NAME = "mifas-viewer"
LOCAL_DAYS_DEFAULT, LOCAL_DAYS_RANGE = 90, (1, 3660)
LOCAL_MAX_MIB_DEFAULT, LOCAL_MAX_MIB_RANGE = 256, (1, 1 << 20)
QUEUE_MAX_MIB_DEFAULT, QUEUE_MAX_MIB_RANGE = 64, (1, 1 << 20)
SCHEMES = ("tls", "udp")


@dataclass(frozen=True)
class AuditConfig:
    scheme: str | None = None  # "tls", "udp" or None (no repository)
    host: str | None = None
    port: int | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    source_id: str | None = None
    enterprise_site_id: str | None = None
    local_days: int = LOCAL_DAYS_DEFAULT
    local_max_mib: int = LOCAL_MAX_MIB_DEFAULT
    queue_max_mib: int = QUEUE_MAX_MIB_DEFAULT
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def repository(self) -> str | None:
        return f"{self.scheme}://{self.host}:{self.port}" if self.scheme else None


def audit_dir() -> Path:
    """$MIFAS_AUDIT_DIR, else platformdirs.user_data_dir("mifas-viewer")/audit (~/.local/share/... on Linux)."""
    override = os.environ.get(AUDIT_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME)) / "audit"


def config_from_json(data: Any, where: str = "the audit settings") -> AuditConfig:
    if data is None:
        return AuditConfig()
    if not isinstance(data, dict):
        return AuditConfig(warnings=(f"{where} are not a JSON object; only the local audit log is written.",))
    warnings: list[str] = []
    values: dict[str, Any] = {}
    repository = data.get("repository")
    if repository is not None:
        try:
            parts = urlsplit(str(repository))
            if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None:
                raise ValueError
            values.update(scheme=parts.scheme, host=parts.hostname, port=parts.port)
        except ValueError:
            warnings.append(f"In {where}, 'repository' is not tls://HOST:PORT or udp://HOST:PORT; audit messages "
                            "are written to the local log only.")
    for key in ("ca_file", "cert_file", "key_file", "server_name", "source_id", "enterprise_site_id"):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value.strip() and "\0" not in value:
            values[key] = value
        else:
            warnings.append(f"In {where}, '{key}' is not a text; it was ignored.")
    for key, default, (lo, hi) in (("local_days", LOCAL_DAYS_DEFAULT, LOCAL_DAYS_RANGE),
                                   ("local_max_mib", LOCAL_MAX_MIB_DEFAULT, LOCAL_MAX_MIB_RANGE),
                                   ("queue_max_mib", QUEUE_MAX_MIB_DEFAULT, QUEUE_MAX_MIB_RANGE)):
        value = data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            values[key] = value
        else:
            warnings.append(f"In {where}, '{key}' is not a whole number between {lo} and {hi}; {default} is used.")
    if ("cert_file" in values) != ("key_file" in values):
        warnings.append(f"In {where}, 'cert_file' and 'key_file' go together; neither is used.")
        values.pop("cert_file", None)
        values.pop("key_file", None)
    return AuditConfig(**values, warnings=tuple(warnings))


def load_audit_config(system_settings: Path | None = None) -> AuditConfig:
    """IT's audit settings from the system-wide settings file (its ``"audit"`` object); never raises."""
    from viewer.settings import read_json_file, system_settings_path

    file = system_settings or system_settings_path()
    data, _problem = read_json_file(file, "system-wide settings")  # a problem is said once, by load_settings()
    if not isinstance(data, dict):
        return AuditConfig()
    return config_from_json(data.get("audit"), where=f"the \"audit\" settings of {file}")
