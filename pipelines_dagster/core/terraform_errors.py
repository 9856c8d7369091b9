"""What a failed Terraform command said: its error diagnostics, and the state lock it reports."""


import re

from .model import LockInfo

_LOCK_MARKERS = ("Error acquiring the state lock", "Error locking state", "ConditionalCheckFailedException")
_ERROR_LINE = re.compile(r"^[\s│╷]*Error: (.+)$", re.M)


def parse_lock_info(text: str) -> LockInfo | None:
    """The lock Terraform reports when the state is held by someone else."""
    if not any(marker in text for marker in _LOCK_MARKERS[:2]):
        return None
    info = LockInfo()
    block = text.split("Lock Info:", 1)[1] if "Lock Info:" in text else ""
    for key, attr in (("ID", "id"), ("Who", "who"), ("Operation", "operation"), ("Created", "created"),
                      ("Path", "path")):
        match = re.search(rf"^[\s│]*{key}:[ \t]*(.*?)[ \t]*$", block, re.M)
        if match and match.group(1):
            setattr(info, attr, match.group(1))
    return info


def error_message(text: str, limit: int = 1500) -> str:
    """Terraform's error diagnostics ('Error: ...' and the lines under it), else the last lines of output."""
    lines = text.splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if _ERROR_LINE.match(line):
            block = [line.strip(" │╷╵")]
            for follow in lines[i + 1: i + 12]:
                if _ERROR_LINE.match(follow) or follow.strip() == "╵":
                    break
                block.append(follow.lstrip("│╷╵").rstrip())
            picked.append("\n".join(block).strip())
    if not picked:
        tail = [ln for ln in lines if ln.strip() and not ln.startswith("$ ")][-8:]
        picked = ["\n".join(tail)]
    message = "\n\n".join(picked)
    return message if len(message) <= limit else message[: limit - 3] + "..."


def locked_message(lock: LockInfo, engine: str, command: str, unit: str, waited: str | None) -> str:
    if lock.stale:
        return (f"the state lock ID {lock.id} is stale (held by {lock.who} since {lock.created}, {lock.stale}): "
                f"{engine} {command} did not run; recover with `{engine} force-unlock -force {lock.id}` in {unit} "
                "with its account's apply role")
    holder = f" by {lock.who}" if lock.who else ""
    ident = f" (lock ID {lock.id})" if lock.id else ""
    wait = f" after waiting {waited}" if waited else ""
    return (f"the state is locked{holder}{ident}: {engine} {command} did not run{wait}; retry when the other "
            "operation has finished")


