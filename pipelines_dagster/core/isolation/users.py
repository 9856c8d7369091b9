"""The user units run as: a uid of their own leased from a range when the pipeline is root (only when clean: no
process, no file left behind), never uid 0."""

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ...settings import DEFAULT_ROOT_UNIT_USERS
from .access import IsolationError, private_folder, unit_space

UNIT_USER_VAR = "PIPELINES_UNIT_USER"


# Folders every user may write on a Linux system or container image (FHS; /var/lock is usually /run/lock).
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock", "/var/lock")
MAX_DEPTH = 64


@dataclass
class UnitUser:
    """The user unit processes run as, with no supplementary groups. `lease`: the open lock file that reserves a
    uid of a range for this unit until `release()`."""

    name: str
    uid: int
    gid: int
    lease: IO[str] | None = None

    def popen_args(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def owns(self, path: Path) -> None:
        os.lchown(path, self.uid, self.gid)

    def end_processes(self) -> None:
        """SIGKILL to every process of a leased uid (no one else runs as it), sent by a process of that uid
        (kill(-1) as it reaches exactly its processes, at once); then waits a little for them to be gone."""
        uid = self.uid

        def kill_all() -> None:
            if os.getuid() == uid and os.geteuid() == uid:  # never as anyone else
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)

        assert self.lease is not None, "only a leased uid is nobody else's"
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # what survives keeps the uid taken
            subprocess.run(["/bin/sh", "-c", ":"], preexec_fn=kill_all, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **self.popen_args())
        deadline = time.monotonic() + 2
        while uid in _uids_in_use() and time.monotonic() < deadline:
            time.sleep(0.01)

    def release(self) -> None:
        if self.lease is not None:
            self.lease.close()  # closing the file drops its lock
            self.lease = None


def uid_range(spec: str | None) -> tuple[int, int] | None:
    """`FIRST-LAST` of PIPELINES_UNIT_USER as numbers, None when it names a single user."""
    first, _, last = (spec or "").partition("-")
    if not (first.isdigit() and last.isdigit()):
        return None
    if not 0 < int(first) <= int(last) < 2**31:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: not a range of uids FIRST-LAST (0 excluded)")
    return int(first), int(last)


def _alive(pid: str) -> bool:
    """Whether a zombie process still has a running thread (its leader exited first)."""
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task.name}/stat", "rb") as fh:
                if fh.read().rpartition(b")")[2].split()[0] != b"Z":
                    return True
    except OSError:
        pass
    return False


def _uids_in_use() -> set[int]:
    """Real uids of the processes alive now (an orphaned unit process keeps its uid taken; a zombie does not)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as fh:
                    zombie = False
                    for line in fh:
                        if line.startswith(b"State:"):
                            zombie = line.split()[1] == b"Z"
                        elif line.startswith(b"Uid:"):
                            if not zombie or _alive(entry.name):
                                found.add(int(line.split()[1]))
                            break
            except OSError:
                continue
    return found


def _run_folder_owners(space: Path) -> set[int]:
    """Owners of the unit parts of the run folders in the unit space (kept ones, or left by a killed pipeline)."""
    owners = set()
    for run in space.glob("pipelines-run-*"):
        for part in ("src", "home", "tmp", "work"):
            with contextlib.suppress(OSError):
                owners.add(os.lstat(run / part).st_uid)
    return owners


def _walk_shared(dir_fd: int, first: int, last: int, remove: int | None, found: set[int], depth: int) -> None:
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        units = first <= st.st_uid <= last
        if units:
            found.add(st.st_uid)
        if st.st_uid == remove:
            with contextlib.suppress(OSError):  # what stays is found again by the next look
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.name, dir_fd=dir_fd)  # by descriptors: no symlink is followed
                else:
                    os.unlink(entry.name, dir_fd=dir_fd)
            continue
        # a unit's uid may have written in its own folders, another unit's, and folders anyone may write
        writable = units or st.st_mode & 0o002 or (st.st_mode & 0o020 and first <= st.st_gid <= last)
        if stat.S_ISDIR(st.st_mode) and writable and depth < MAX_DEPTH:
            try:
                fd = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                _walk_shared(fd, first, last, remove, found, depth + 1)
            finally:
                os.close(fd)


def shared_owners(first: int, last: int, remove: int | None = None) -> set[int]:
    """The uids of [first, last] that own something in the SHARED_FOLDERS; first, with `remove`, what that uid
    owns there is deleted."""
    found: set[int] = set()
    for root in {os.path.realpath(folder) for folder in SHARED_FOLDERS}:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            _walk_shared(fd, first, last, remove, found, 0)
        finally:
            os.close(fd)
    return found


def _cleaned(uid: int, first: int, last: int) -> bool:
    """Whether `uid` owns nothing in the SHARED_FOLDERS, once what it owns there is removed."""
    if uid not in shared_owners(first, last):
        return True
    shared_owners(first, last, remove=uid)
    return uid not in shared_owners(first, last)


def lease_uid(first: int, last: int, space: Path) -> UnitUser:
    """A clean uid of [first, last]: no unit holds it (an exclusive lock on its lease file), no process runs as
    it, no run folder in `space` is its, and it owns nothing in the SHARED_FOLDERS (what it left there is removed
    first; a uid whose files stay is not leased)."""
    import fcntl
    import random

    leases = private_folder(space / "uids", 0o700)
    busy = _uids_in_use() | _run_folder_owners(space)
    size = last - first + 1
    start = random.randrange(size)
    for step in range(min(size, 4096)):
        uid = first + (start + step) % size
        if uid in busy:
            continue
        fh = open(leases / str(uid), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        # again under the lock: another unit may have held the uid since
        if uid in _uids_in_use() | _run_folder_owners(space) or not _cleaned(uid, first, last):
            fh.close()
            continue
        return UnitUser(f"uid {uid}", uid, uid, lease=fh)
    raise IsolationError(f"{UNIT_USER_VAR}={first}-{last}: every uid of the range is in use, or owns files that "
                         f"cannot be removed in {', '.join(SHARED_FOLDERS)}")


def resolve_unit_user(spec: str | None, work_dir: str | None = None) -> UnitUser | None:
    """The user to switch to for `spec`: a name or a numeric uid, or a range FIRST-LAST from which this unit leases
    a uid of its own (release it with `UnitUser.release`); None when units run as ourselves, which only a pipeline
    that is not root may do. Root (uid 0, or the group root) is refused."""
    root = os.geteuid() == 0
    if not spec:
        if not root:
            return None
        spec = DEFAULT_ROOT_UNIT_USERS  # as root, units never run as ourselves
    span = uid_range(spec)
    if span is not None:
        if not root:
            raise IsolationError(f"{UNIT_USER_VAR}={spec}: running units as other users needs the pipeline to run "
                                 f"as root (it runs as uid {os.geteuid()}); unset it to run units as this user")
        probe = UnitUser(f"uid {span[0]}", span[0], span[0])  # any uid of the range reaches the same folders
        return lease_uid(*span, unit_space(work_dir, probe))
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, ValueError):
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: no such user") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: units must not run as root (uid 0) nor with its group: name "
                             f"another user, or a range of uids such as {DEFAULT_ROOT_UNIT_USERS}")
    if entry.pw_uid == os.geteuid():  # not root: units run as ourselves
        return None
    if not root:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: running units as another user needs the pipeline to run "
                             f"as root (it runs as uid {os.geteuid()}); unset it to run units as this user")
    return UnitUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


