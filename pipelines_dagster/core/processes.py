"""A unit's commands as processes: each in a session of its own, its output in files of the run folder (never a
pipe: the command does not die with us), a deadline with a grace before SIGKILL, and the output captured, capped
and redacted."""


import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..redact import Redactor, StreamRedactor
from .statelock import Hold


class OutputCapture:
    """Redacts line by line and keeps the first and the last `limit / 2` characters."""

    def __init__(self, limit: int, redactor: Redactor):
        self.head_limit = max(limit // 2, 1)
        self.tail_limit = max(limit - self.head_limit, 1)
        self.redact = StreamRedactor(redactor)  # line by line, and a private key's lines in between
        self.head: list[str] = []
        self.head_chars = 0
        self.tail: deque[str] = deque()
        self.tail_chars = 0
        self.omitted_lines = 0
        self.omitted_chars = 0
        self.step_text: deque[str] = deque(maxlen=400)  # last lines of the current command, for diagnostics
        self._lock = threading.Lock()

    def feed(self, raw: bytes | str) -> None:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = self.redact(line.replace("\r\n", "\n"))
        if not line:  # inside a private key
            return
        if len(line) > self.tail_limit:
            line = line[: self.tail_limit - 40] + " ...[line truncated]\n"
        with self._lock:
            self.step_text.append(line)
            if not self.tail and self.head_chars + len(line) <= self.head_limit:
                self.head.append(line)
                self.head_chars += len(line)
                return
            self.tail.append(line)
            self.tail_chars += len(line)
            while self.tail_chars > self.tail_limit:
                dropped = self.tail.popleft()
                self.tail_chars -= len(dropped)
                self.omitted_lines += 1
                self.omitted_chars += len(dropped)

    def start_step(self, command: str) -> None:
        with self._lock:
            self.step_text.clear()
        self.feed(f"$ {command}\n")

    def step(self) -> str:
        with self._lock:
            return "".join(self.step_text)

    def text(self) -> str:
        with self._lock:
            middle = ""
            if self.omitted_lines:
                middle = f"\n... [{self.omitted_lines} lines, {self.omitted_chars} characters omitted] ...\n\n"
            return "".join(self.head) + middle + "".join(self.tail)





READ_CHUNK = 1 << 20  # longest line read from a command's output at once


@dataclass
class Completed:
    exit_code: int | None
    timed_out: bool = False


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _new_file(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _feed_lines(fh: IO[bytes], capture: "OutputCapture", budget: int) -> None:
    while budget > 0 and (chunk := fh.readline(min(READ_CHUNK, budget))):
        capture.feed(chunk)
        budget -= len(chunk)


def _feed_file(path: Path, capture: "OutputCapture") -> None:
    """What a command printed: all of it, or, when it is longer than the capture could keep, its beginning and
    its end (a hostile command can print gigabytes: they are not read)."""
    side = 2 * (capture.head_limit + capture.tail_limit)  # bytes: more than the characters kept of each end
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            _feed_lines(fh, capture, side)
            if size > 2 * side:
                capture.feed(f"... [{size - 2 * side} bytes of output not read] ...\n")
                fh.seek(size - side)
                fh.readline(READ_CHUNK)  # to the start of a line
            _feed_lines(fh, capture, side)
    except OSError:
        pass


def run_process(args: Sequence[str], *, cwd: Path, env: Mapping[str, str], capture: OutputCapture,
                deadline: float, grace_s: float, log_file: Path, stdout_file: Path | None = None,
                user=None, on_start: Callable[[int], contextlib.AbstractContextManager[Hold]] | None = None,
                preexec: Callable[[], None] | None = None) -> Completed:
    """Runs one command in a session of its own (as `user`, a UnitUser, when given). Its output goes to `log_file`
    (stdout to `stdout_file` when given), files of ours, never to a pipe: the command does not die with us. The
    output is captured when the command has ended. `on_start(pid)` gives a context held while it runs (a
    statelock Hold, told the exit code). `preexec`: run in the child before exec (Confinement.preexec).

    At the deadline the process group gets SIGTERM, and SIGKILL only `grace_s` later; the same if we are
    interrupted (a cancelled run)."""
    out = _new_file(log_file)
    try:
        stdout = _new_file(stdout_file) if stdout_file is not None else out
        try:
            proc = subprocess.Popen(list(args), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout,
                                    stderr=out, start_new_session=True, preexec_fn=preexec,
                                    **(user.popen_args() if user else {}))
        finally:
            if stdout != out:
                os.close(stdout)
    finally:
        os.close(out)
    try:
        with on_start(proc.pid) if on_start else contextlib.nullcontext(Hold()) as hold:
            done = _wait(proc, deadline, grace_s)
            hold.exit_code = done.exit_code
            return done
    finally:
        _feed_file(log_file, capture)


def _wait(proc: subprocess.Popen, deadline: float, grace_s: float) -> Completed:
    # A watchdog enforces the deadline, so that this thread can block in wait() (Popen.wait with a timeout polls
    # with sleeps of up to 50 ms, which shows in the run time of short commands).
    exited = threading.Event()
    timed_out = threading.Event()

    def watchdog() -> None:
        if exited.wait(max(deadline - time.monotonic(), 0.0)):
            return
        timed_out.set()
        _kill_group(proc.pid, signal.SIGTERM)  # Terraform stops gracefully on SIGTERM (saves state, unlocks)
        if not exited.wait(grace_s):
            _kill_group(proc.pid, signal.SIGKILL)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        proc.wait()
    except BaseException:  # interrupted (run cancelled): the child must not outlive us, nor die without saving
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        finally:
            _kill_group(proc.pid, signal.SIGKILL)
            exited.set()
        raise
    exited.set()
    guard.join()
    # Whatever the command left behind in its group (a provisioner's background job) does not outlive it.
    _kill_group(proc.pid, signal.SIGKILL)
    return Completed(exit_code=proc.returncode, timed_out=timed_out.is_set())


