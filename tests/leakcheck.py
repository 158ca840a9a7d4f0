"""A pytest plugin (loaded by tests/conftest.py) that watches the whole suite for patient data and secrets where
they must never be: every log record that reaches the root logger (whatever its level: a test that turns on
DEBUG is watched at DEBUG) and the text of every MifasError the code raises (the sentences users see), in plain
and in percent-encoded form (a URL's query string).  The
values watched are the patient names, IDs and birth dates the suite's test data uses, and the secrets the
sign-in tests register with :func:`watch`.

At the end of the session, each finding is printed with the test that produced it, and the session fails.
What the tests print on purpose (``mifas-pacs find`` results on stdout are the user's own data) is not a log
line and is not watched; the command-line tests check stderr themselves.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, quote_plus

import pytest

# Patient attributes of the suite's test data (tests/pacs/conftest.py, tests/pacs/scripted.py, tests/ui, ...).
PATIENT_VALUES = (
    "Test^Phantom", "MIFAS-T1", "Other^Person", "MIFAS-T2", "Other^Patient", "Mine^Patient", "MINE-1",
    "Tls^Patient", "MIFAS-TLS", "Import^Patient", "IMP-1", "Forged^Patient", "FORGED-1", "Auth^Test", "MIFAS-AUTH",
    "OTHER-9", "MIFAS-CO", "MIFAS-CA", "Doe^Jane", "Yamada^Tarou", "19470312",
)

_lock = threading.Lock()


def _forms(value: str) -> set[str]:
    """A value as a log line may carry it: as is, and percent-encoded (a URL's query string)."""
    return {value, quote(value, safe=""), quote_plus(value, safe="")}


_watched: set[str] = {form for value in PATIENT_VALUES for form in _forms(value)}
_pattern: re.Pattern[str] = re.compile("|".join(map(re.escape, sorted(_watched))))
_findings: list[tuple[str, str, str]] = []  # (test, where, text)
_current = "(collection)"


def watch(*values: str) -> None:
    """Add values (secrets, tokens) that must never appear in a log line or an error text from now on."""
    global _pattern
    with _lock:
        _watched.update(form for v in values if v and len(v) >= 6 for form in _forms(v))
        _pattern = re.compile("|".join(map(re.escape, sorted(_watched))))


def _check(where: str, text: str) -> None:
    if _pattern.search(text):
        with _lock:
            if len(_findings) < 200:
                _findings.append((_current, where, text[:300]))


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is the logging call's problem, not a leak
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += f" | {record.exc_info[1]}"
        _check(f"log {record.name} {record.levelname}", text)


_recorder = _Recorder(level=logging.NOTSET)


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(_recorder)
    from viewer.errors import MifasError

    original = MifasError.__init__

    def init(self: BaseException, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        if args:
            _check(f"error {type(self).__name__}", str(args[0]))

    MifasError.__init__ = init  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    global _current
    _current = item.nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_recorder)
    if not _findings:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{test}: {where}: {text!r}" for test, where, text in _findings]
    message = (f"patient data or a secret appeared in {len(_findings)} log line(s) or error text(s):\n  "
               + "\n  ".join(lines))
    if reporter is not None:
        reporter.write_sep("=", "leak check", red=True)
        reporter.write_line(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
