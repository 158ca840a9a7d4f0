"""A private Secret Service for the keyring tests: its own D-Bus session bus and a GNOME Keyring daemon
(Debian packages dbus and gnome-keyring) unlocked with a throwaway password, in a temporary home.

    with PrivateSecretService(tmp_path) as service:   # this process's keyring now talks to it
        viewer.secrets.store_secret("ref", "value")
    # back to whatever keyring the process had (usually none)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

READY_TIMEOUT_S = 15.0
SECRETS_NAME = "org.freedesktop.secrets"


def available() -> bool:
    return shutil.which("dbus-daemon") is not None and shutil.which("gnome-keyring-daemon") is not None


class PrivateSecretService:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.address = ""
        self._bus: subprocess.Popen[str] | None = None
        self._keyring: subprocess.Popen[bytes] | None = None
        self._saved_address: str | None = None

    def start(self) -> PrivateSecretService:
        home = self.work_dir / "home"
        runtime = self.work_dir / "run"
        for folder in (home, runtime):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        self._bus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1", f"--address=unix:path={runtime}/bus"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self._bus.stdout is not None
        self.address = self._bus.stdout.readline().strip()  # printed once the bus listens
        if not self.address:
            self.stop()
            raise RuntimeError("dbus-daemon did not start")
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=self.address, HOME=str(home),
                   XDG_DATA_HOME=str(home / ".local/share"), XDG_RUNTIME_DIR=str(runtime))
        self._keyring = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert self._keyring.stdin is not None
        self._keyring.stdin.write(b"throwaway-login-password")  # --unlock reads the login password from stdin
        self._keyring.stdin.close()
        self._wait_for_name()
        self._saved_address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = self.address
        reselect_keyring()
        return self

    def _wait_for_name(self) -> None:
        """Until the daemon owns org.freedesktop.secrets on our bus (asked of the bus, not waited for blindly)."""
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus")
        deadline = time.monotonic() + READY_TIMEOUT_S
        with open_dbus_connection(self.address) as connection:
            while time.monotonic() < deadline:
                assert self._keyring is not None
                if self._keyring.poll() is not None:
                    raise RuntimeError(f"gnome-keyring-daemon exited with status {self._keyring.returncode}")
                reply = connection.send_and_get_reply(new_method_call(bus, "NameHasOwner", "s", (SECRETS_NAME,)))
                if reply.body[0]:
                    return
                time.sleep(0.02)  # polling an observable condition with a deadline, not a fixed wait
        raise RuntimeError("gnome-keyring-daemon did not register the Secret Service")

    def stop(self) -> None:
        try:
            if self._saved_address is not None or os.environ.get("DBUS_SESSION_BUS_ADDRESS") == self.address:
                if self._saved_address is None:
                    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
                else:
                    os.environ["DBUS_SESSION_BUS_ADDRESS"] = self._saved_address
                reselect_keyring()
        finally:
            self._stop_processes()

    def _stop_processes(self) -> None:
        for process in (self._keyring, self._bus):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self._keyring = self._bus = None

    def __enter__(self) -> PrivateSecretService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reselect_keyring() -> None:
    """The keyring package picks its backend once per process (and caches which backends are viable); pick again
    for the environment as it is now."""
    import keyring.backend
    import keyring.core

    with contextlib.suppress(AttributeError, KeyError):  # jaraco.functools.once's reset: nothing cached yet
        keyring.backend.get_all_keyring.reset()
    keyring.core.init_backend()
