"""State locks whose holder is gone.

Every Terraform command of ours that takes the state lock is recorded while it runs (who Terraform will say holds
the lock, its process id and start time); a record is removed when the command ends under our watch. When
Terraform reports a lock, it is stale if it is older than any action of ours may hold one (the action timeout plus
the apply grace), or if it was taken on this host by a recorded process of ours that is no longer alive (the
pipeline was killed, and Terraform with it).
"""

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

RECORDS_KEPT_S = 7 * 24 * 3600
TERRAFORM_EXITS = (0, 1, 2)  # what Terraform itself exits with; anything else: it was killed
_CREATED = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?\s*(Z|[+-]\d\d:?\d\d)?")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells it from a later process with the same id;
    None when there is no such process, or only its zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


def parse_created(value: str | None) -> float | None:
    """Terraform's lock time (`2024-05-01 10:00:00.123 +0000 UTC` or RFC 3339) as a Unix time."""
    match = _CREATED.search(value or "")
    if not match:
        return None
    day, clock, fraction, zone = match.groups()
    zone = (zone or "Z").replace("Z", "+00:00")
    if ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    fraction = (fraction or "")[:7]
    return datetime.fromisoformat(f"{day}T{clock}{fraction}{zone}").astimezone(UTC).timestamp()


def who(user_name: str) -> str:
    """What Terraform records as a lock's holder for a process of that user on this host."""
    return f"{user_name}@{socket.gethostname()}"


class Hold:
    exit_code: int | None = None


class Holders:
    """The registry of our running lock-taking commands (a folder only we can write)."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def holding(self, pid: int, holder: str, unit: str, command: str) -> Iterator[Hold]:
        """Records the command while it runs. The record stays unless the caller sets `exit_code` on the yielded
        Hold to one of Terraform's own (0, 1, 2): a command that was killed (by a signal, or its panic wrapper's
        child was: exit 255) may have left its lock behind."""
        ticks = start_ticks(pid)
        record = {"who": holder, "pid": pid, "start_ticks": ticks, "boot_id": boot_id(), "started": time.time(),
                  "unit": unit, "command": command}
        path = self.folder / f"{record['boot_id']}-{pid}-{ticks}.json"
        recorded = True
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
        except OSError:
            recorded = False  # without a record the lock can still be judged by its age
        hold = Hold()
        try:
            yield hold
        finally:
            if recorded and hold.exit_code in TERRAFORM_EXITS:
                path.unlink(missing_ok=True)

    def records(self) -> list[dict]:
        found = []
        now = time.time()
        for path in self.folder.glob("*.json") if self.folder.is_dir() else ():
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if now - record.get("started", 0) > RECORDS_KEPT_S:
                path.unlink(missing_ok=True)
                continue
            found.append(record)
        return found


def alive(record: dict) -> bool:
    return record.get("boot_id") == boot_id() and start_ticks(record["pid"]) == record.get("start_ticks")


def stale_reason(lock_who: str | None, lock_created: str | None, holders: Holders | None, max_age_s: float,
                 now: float | None = None) -> str | None:
    """Why a lock's holder is gone, or None when it may still be working (or we cannot tell)."""
    created = parse_created(lock_created)
    if created is None:
        return None
    now = time.time() if now is None else now
    if now - created > max_age_s:
        return (f"older than {max_age_s:.0f} s, the longest any action of this pipeline may hold it (its timeout "
                "and the apply grace)")
    if holders is None or not lock_who or lock_who.rpartition("@")[2] != socket.gethostname():
        return None
    mine = [r for r in holders.records()
            if r.get("who") == lock_who and r.get("started", 0) - 5 <= created <= r.get("started", 0) + max_age_s]
    if mine and not any(alive(r) for r in mine):
        pids = ", ".join(str(r["pid"]) for r in mine)
        return f"that process is gone (process {pids} of this pipeline on this host, no longer running)"
    return None
