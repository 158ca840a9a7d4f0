"""A real OAuth 2.0 authorization server on loopback for the DICOMweb sign-in tests: django-oauth-toolkit (from
PyPI) in a small Django project (this folder), run as a child process, with a bearer-protected DICOMweb resource
that forwards to an Orthanc (views.py says why not Orthanc itself).

    with OAuthServer(tmp_path, orthanc.dicomweb_url + "/", clients={"viewer": ("id", "secret")}) as server:
        server.token_url, server.dicomweb_url, server.stats(), server.revoke(token, client)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 60.0


class OAuthServer:
    def __init__(self, work_dir: Path, upstream: str, *, clients: Mapping[str, tuple[str, str]],
                 static_tokens: Mapping[str, str] | None = None, token_lifetime_s: int = 300,
                 device_clients: Mapping[str, str] | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.upstream = upstream
        self.clients = dict(clients)
        self.device_clients = dict(device_clients or {})
        self.static_tokens = dict(static_tokens or {})
        self.token_lifetime_s = token_lifetime_s
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/o/token/"

    @property
    def device_url(self) -> str:
        return f"{self.url}/o/device-authorization/"

    def approve(self, user_code: str, decision: str = "accept") -> None:
        """What the person does in the browser with the code the viewer showed (views.approve says how)."""
        answer = requests.get(f"{self.url}/test/approve", params={"user_code": user_code, "decision": decision},
                              timeout=10)
        answer.raise_for_status()

    def revoke_refresh(self, token: str, client_id: str) -> None:
        """Revoke a public client's refresh token (RFC 7009), as IT would when a workstation is lost."""
        answer = requests.post(f"{self.url}/o/revoke_token/", data={"token": token, "client_id": client_id,
                                                                     "token_type_hint": "refresh_token"}, timeout=10)
        answer.raise_for_status()

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> OAuthServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MIFAS_OAUTH_DIR=str(self.work_dir), MIFAS_OAUTH_UPSTREAM=self.upstream,
                   MIFAS_OAUTH_TOKEN_S=str(self.token_lifetime_s), PYTHONPATH=str(REPO),
                   DJANGO_SETTINGS_MODULE="tests.peers.oauth.settings")
        log = open(self.work_dir / "server.log", "wb")  # noqa: SIM115 - the child holds it
        self._process = subprocess.Popen([sys.executable, "-m", "tests.peers.oauth.serve"], cwd=REPO, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"clients": self.clients, "static_tokens": self.static_tokens,
                                              "device_clients": self.device_clients}))
        self._process.stdin.close()
        line = self._process.stdout.readline()  # the server binds before it says its port: then it is ready
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the OAuth test server did not start: {self.log_tail()}")
        self.port = int(line.split()[1])
        return self

    def log_tail(self) -> str:
        try:
            return (self.work_dir / "server.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """{"tokens_issued": {application: n}, "resource_requests": n, "refused": n}"""
        return requests.get(f"{self.url}/stats", timeout=10).json()

    def token(self, client: str) -> str:
        """A new access token for `client`, obtained as any OAuth client would."""
        client_id, secret = self.clients[client]
        answer = requests.post(self.token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret),
                               timeout=10)
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def revoke(self, token: str, client: str) -> None:
        """Revoke an access token (RFC 7009), as the client's administrator would."""
        client_id, secret = self.clients[client]
        answer = requests.post(f"{self.url}/o/revoke_token/", data={"token": token, "token_type_hint": "access_token"},
                               auth=(client_id, secret), timeout=10)
        answer.raise_for_status()
