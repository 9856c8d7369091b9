"""What a unit user can reach: permission checks on paths, and the folders only the pipeline may write."""

import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .users import UnitUser

UNIT_SPACE = "pipelines-units"  # under the work folder (or /tmp): run folders and staged copies

class IsolationError(Exception):
    """The unit cannot be isolated as configured (unknown user, not root, an unsafe shared folder)."""


def _permits(st: os.stat_result, user: "UnitUser", bits: int) -> bool:
    if st.st_uid == user.uid:
        mode = st.st_mode >> 6
    elif st.st_gid == user.gid:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return mode & bits == bits


def can_reach(path: str | os.PathLike, user: "UnitUser", bits: int = 4) -> bool:
    """Whether `user` can open `path` for `bits` (4 read, 1 execute or search): every folder above it searchable."""
    try:
        real = Path(os.path.realpath(path))
        for folder in reversed(real.parents):
            if not _permits(os.stat(folder), user, 1):
                return False
        return _permits(os.stat(real), user, bits)
    except OSError:
        return False


def can_use(path: str | os.PathLike, user: "UnitUser") -> bool:
    """Whether `user` can use a file (read it; run it when it is executable) or a whole folder (search every
    folder, read every file, run every executable in it)."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        return can_reach(real, user, 5 if os.access(real, os.X_OK) else 4)
    if not can_reach(real, user, 5):
        return False
    try:
        for top, dirs, files in os.walk(real):
            for name in dirs:
                if not _permits(os.stat(os.path.join(top, name)), user, 5):
                    return False
            for name in files:
                st = os.stat(os.path.join(top, name))
                if not _permits(st, user, 5 if st.st_mode & stat.S_IXUSR else 4):
                    return False
    except OSError:
        return False
    return True


def private_folder(path: Path, mode: int = 0o711) -> Path:
    """A folder of ours that nobody else can write (created when missing); IsolationError when someone else's."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise IsolationError(f"cannot create {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise IsolationError(f"{path} is not a folder of uid {os.geteuid()} that only it can write: refusing to "
                             "run units in it (remove it, or set the work folder elsewhere)")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def unit_space(work_dir: str | None, user: "UnitUser") -> Path:
    """A folder of ours that `user` can reach: the work folder if it can, else /tmp (e.g. when the work folder is
    inside a 0700 folder, as pytest's and a CI clone's are)."""
    for candidate in (work_dir or tempfile.gettempdir(), "/tmp"):
        if can_reach(candidate, user, 1):
            return private_folder(Path(candidate) / UNIT_SPACE)
    raise IsolationError(f"neither {work_dir or tempfile.gettempdir()} nor /tmp can be reached by unit user "
                         f"{user.name}")


