"""The installer's lock file (packaging/deb/requirements.lock) against pyproject.toml: every runtime dependency
is locked at a version its specifier allows, every locked package carries hashes, and nothing is locked below the
first version without a published advisory.  Fails when someone changes a dependency and forgets
``python3 packaging/deb/lock.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "packaging/deb/requirements.lock"

# The installer's Python: Debian 12's 3.11 on amd64 (build_deb.py's Depends).
TARGET = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.2",
          "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}

# The first release after each published advisory that touches how we use the package.
ADVISORY_FLOORS = {
    "pydicom": "3.0.2",  # GHSA-v856-2rf8-9f28 (CVE-2026-32711): path traversal through a File-set's File IDs
    "requests": "2.32.4",  # CVE-2024-47081: .netrc credentials sent to the wrong host; CVE-2024-35195 (2.32.0)
    "urllib3": "2.5.0",  # CVE-2025-50181 / 50182: redirects not disabled as asked
    "idna": "3.7",  # CVE-2024-3651: quadratic time on crafted input
    "certifi": "2024.7.4",  # CVE-2024-39689: GLOBALTRUST roots removed
    "pillow": "10.3.0",  # CVE-2024-28219: buffer overflow in _imagingcms
}


def locked() -> dict[str, tuple[Version, list[str]]]:
    """{canonical name: (version, hashes)} from the lock file."""
    out: dict[str, tuple[Version, list[str]]] = {}
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)(.*)$", line)
        if match:
            out[canonicalize_name(match[1])] = (Version(match[2]), re.findall(r"--hash=sha256:([0-9a-f]{64})", match[3]))
    return out


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET)]


def test_the_lock_pins_every_package_with_hashes() -> None:
    lock = locked()
    assert len(lock) >= 10, "the lock file lists almost nothing: was it truncated?"
    for name, (_, hashes) in lock.items():
        assert hashes, f"{name} is locked without a hash"


@pytest.mark.parametrize("requirement", runtime_requirements(), ids=str)
def test_every_dependency_is_locked_at_an_allowed_version(requirement: Requirement) -> None:
    lock = locked()
    name = canonicalize_name(requirement.name)
    assert name in lock, f"{requirement} is in pyproject.toml but not in the lock: run packaging/deb/lock.py"
    version = lock[name][0]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"the lock has {name}=={version}, which pyproject.toml's {requirement} does not allow: "
        "run packaging/deb/lock.py")


@pytest.mark.parametrize("name", sorted(ADVISORY_FLOORS))
def test_nothing_is_locked_below_a_published_advisory(name: str) -> None:
    lock = locked()
    if name not in lock:  # not bundled (any more): nothing to check, but the table should say so
        pytest.fail(f"{name} is not in the lock any more: remove it from ADVISORY_FLOORS")
    assert lock[name][0] >= Version(ADVISORY_FLOORS[name]), f"{name} {lock[name][0]} predates a fixed advisory"


def test_pyproject_floors_are_past_the_advisories() -> None:
    """The floors themselves, so that a source install (not only the .deb) gets fixed versions."""
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        if name in ADVISORY_FLOORS:
            floor = Version(ADVISORY_FLOORS[name])
            below = [v for v in _versions_below(floor) if requirement.specifier.contains(v, prereleases=True)]
            assert not below, f"pyproject.toml allows {name} {below[0]}, below the advisory floor {floor}"


def _versions_below(floor: Version) -> list[Version]:
    """A few versions just below `floor` (enough to tell whether a specifier's lower bound is past it)."""
    major, minor, micro = floor.major, floor.minor, floor.micro
    candidates = [Version(f"{major}.{minor}.{micro - 1}")] if micro else []
    if minor:
        candidates.append(Version(f"{major}.{minor - 1}.99"))
    if major:
        candidates.append(Version(f"{major - 1}.99.99"))
    return candidates
