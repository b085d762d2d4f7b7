"""Who may read what vigil writes: the file-creation mask while a command runs.

Events, face snapshots, the enrolment cache and the events database are biometric data. While a command that writes
them runs, the process's umask makes every file it creates 0600 and every folder 0700 (``data_access: private``,
the default) or 0640 / 0750 (``group``: e.g. a backup user in the group). SQLite's journal files take the database
file's mode, and a JPEG written by OpenCV or a temporary file follows the same mask: nothing is created readable by
other users. Files that already exist keep their mode; :func:`readable_by_others` finds them for a warning.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

UMASKS = {"private": 0o077, "group": 0o027}


@contextlib.contextmanager
def file_creation_mode(access: str) -> Iterator[None]:
    """Set the umask for ``access`` (``private`` or ``group``) for the duration; the previous one is restored."""
    previous = os.umask(UMASKS[access])
    try:
        yield
    finally:
        os.umask(previous)


def readable_by_others(path: Path) -> bool:
    """True when ``path`` exists and users outside its group may read it."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False
