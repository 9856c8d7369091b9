"""One demo per folder. Two demos over one folder would share its git remote, DAGSTER_HOME and saved Terraform
states, each with an AWS emulator of its own: their daemons fight over the instance and the last one to stop
overwrites the other's states. The demo holds an exclusive `flock` on `<folder>/demo.lock` while it runs, with
its pid and port written in the file for the message a second one prints. The kernel releases the lock when the
process ends, however it ends (a demo killed with SIGKILL included): it cannot go stale."""

import fcntl
import json
import os
import time
from pathlib import Path

LOCK_FILE = "demo.lock"


class FolderInUse(Exception):
    """Another demo holds the folder; the message names it and says what to do."""


def hold(folder: Path, port: int) -> int:
    """Takes the folder's lock for the life of this process (the returned descriptor is not inherited by child
    processes) and writes who holds it; raises FolderInUse, at once, when another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderInUse(_in_use_message(folder, path)) from None
    holder = json.dumps({"pid": os.getpid(), "port": port, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, (holder + "\n").encode(), 0)
    return fd


def holder(path: Path, wait_s: float = 2.0) -> dict:
    """Who holds the lock, as it wrote it (it writes just after taking the lock: a moment's wait covers that)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            found = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            found = {}
        if (isinstance(found, dict) and _alive(found.get("pid"))) or time.monotonic() > deadline:
            return found if isinstance(found, dict) else {}
        time.sleep(0.1)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use_message(folder: Path, path: Path) -> str:
    found = holder(path)
    pid, port = found.get("pid", "unknown"), found.get("port")
    ui = f", UI http://127.0.0.1:{port}" if port else ""
    since = f", started {found['started']}" if found.get("started") else ""
    return (f"a demo is already running on {folder} (pid {pid}{ui}{since}).\n"
            f"One demo per folder: two would share its git remote, Dagster instance and saved Terraform states.\n"
            f"Stop it with Ctrl-C in its terminal (or: kill {pid}), or run a second demo in another folder, with its "
            f"own remote and states: make run PORT=3001 FOLDER=.demo/second (or from another clone).")
