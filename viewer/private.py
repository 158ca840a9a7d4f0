"""Data at rest is the user's alone (no Qt): folders 0700 and files 0600, whatever the umask.

The library (images, index, job records), the settings, the cluster profiles and what ``mifas-pacs get --out``
writes hold patient data or the addresses of the PACS.  Every folder we create goes through
:func:`private_dir` and every file through :data:`PRIVATE_FILE` (``os.open``'s mode: the umask can only take
bits away); an existing library with looser modes is tightened when it opens (:func:`tighten`).  A folder that
exists already and that we do not own the contents of (``/etc/mifas-viewer``, a parent of the library) is left as
it is.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents as folders only the user can open (0700 whatever the umask);
    leave folders that exist already as they are.  Raises OSError."""
    missing: list[Path] = []
    folder = Path(path)
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another thread or process: theirs to set
            continue
        os.chmod(folder, PRIVATE_DIR)  # the umask may have taken the user's own bits
    return Path(path)


def tighten(path: Path) -> bool:
    """Take the group's and others' permissions off `path` (a folder or a file we own); True when it had any.
    Raises OSError."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or not mode & _OTHERS:
        return False
    os.chmod(path, stat.S_IMODE(mode) & ~_OTHERS)
    return True
