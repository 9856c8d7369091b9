"""The demo's terminal: only what a person needs there. `dagster dev`'s own output (sensor ticks, step output, its
warnings) goes to a log file; the terminal gets the UI address, what is watched, one line when a run starts and
one when it finishes (with its link), errors, and one line when the demo stops.

- `DagsterOutput` copies `dagster dev`'s output into the log file, without colour codes, and says when the UI is
  served; of an error it prints the first line (once per distinct message: a sensor failing every tick is one
  line), pointing to the log for the rest.
- `RunFollower` follows the Dagster instance's run storage (as the UI does) and prints the runs' lines.
- `foreground` makes Ctrl-C the demo's alone when it runs under `make` (see there).
- `QUIET_WARNINGS`: warnings of Dagster's own that nobody running the demo can act on, filtered by their exact
  text (PYTHONWARNINGS reaches every process `dagster dev` starts).
"""

import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

# Each filter is action:message-prefix:category (Warning matches every category; the text decides).
QUIET_WARNINGS = [
    # `dagster dev` is the documented command of Dagster 1.13 for a project without `dg`; the demo runs no `dg`.
    "ignore:Function `dev_command` is superseded:Warning",
    # Dagster 1.13.27's SensorDefinition.with_attributes passes owners=self._owners, [] when no owners were given,
    # so its beta warning fires for every sensor Definitions binds resources to, in every process that loads the
    # code location (one per step): nothing in the project passes `owners`.
    "ignore:Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta:Warning",
]

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# dagster's log line: "<date> <time> <zone> - <logger> - <LEVEL> - <message>"
LOG_LINE = re.compile(r"^\S+ \S+ \S+ - (?P<logger>\S+) - (?P<level>[A-Z]+) - (?P<message>.*)$")
RUN_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
SERVING = "Serving dagster-webserver on "


def quiet_warnings(environment: dict) -> str:
    """PYTHONWARNINGS with the demo's filters after whatever the environment had."""
    return ",".join(filter(None, [environment.get("PYTHONWARNINGS", ""), *QUIET_WARNINGS]))


class Console:
    """Lines for the person at the terminal. Once the demo is stopping, only the stop's summary: `stopping` starts
    its line at once (stopping takes a few seconds), `say(..., last=True)` ends it, and nothing follows."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None):
        self._out, self._err = out or sys.stdout, err or sys.stderr
        self._lock = threading.Lock()
        self._state = "open"  # then "stopping", then "closed"

    def say(self, text: str, *, stamp: bool = False, error: bool = False, last: bool = False) -> None:
        with self._lock:
            if self._state == "closed" or (self._state == "stopping" and not last):
                return
            line = f"{time.strftime('%H:%M:%S')} {text}" if stamp else text
            self._write(self._out if last or not error else self._err, line + "\n")
            if last:
                self._state = "closed"

    def stopping(self) -> None:
        with self._lock:
            if self._state == "open":
                self._state = "stopping"
                self._write(self._out, "stopping... ")

    @staticmethod
    def _write(stream: IO[str], text: str) -> None:
        with suppress(OSError, ValueError):  # a terminal closed under us (SIGHUP) is no reason to fail
            stream.write(text)
            stream.flush()


class DagsterOutput(threading.Thread):
    """Copies `dagster dev`'s output (stdout and stderr on one pipe) into `log`, and tells `console` when the UI is
    served and what went wrong."""

    def __init__(self, pipe: IO[bytes], log: Path, console: Console, ui: str):
        super().__init__(name="dagster-output", daemon=True)
        self._pipe, self._log, self._console, self._ui = pipe, log, console, ui
        self.ready = threading.Event()
        self._errors: set[str] = set()
        self.quiet = False  # while stopping: interrupted processes complain, and it is all in the log

    def run(self) -> None:
        with self._log.open("a", encoding="utf-8") as out:
            for raw in iter(self._pipe.readline, b""):
                line = ANSI.sub("", raw.decode("utf-8", errors="replace"))
                out.write(line)
                out.flush()
                self._inspect(line.rstrip("\n"))

    def _inspect(self, line: str) -> None:
        if not self.ready.is_set() and SERVING in line:
            self.ready.set()
            self._console.say(f"Dagster UI ready: {self._ui}")
            return
        match = LOG_LINE.match(line)
        if not match or match["level"] not in ("ERROR", "CRITICAL") or self.quiet:
            return
        message = match["message"].strip()
        if RUN_ID.search(message):  # a run's own events: its line says how it ended, the UI the rest
            return
        if message in self._errors:
            return
        self._errors.add(message)
        short = message if len(message) <= 200 else message[:197] + "..."
        self._console.say(f"error from {match['logger']}: {short} (details in {self._log})", stamp=True,
                          error=True)


FINISHED = {"SUCCESS": "succeeded", "FAILURE": "failed", "CANCELED": "canceled"}
RUNNING = {"STARTING", "STARTED", "CANCELING"}


def describe(job_name: str, tags: dict[str, str]) -> str:
    """What a run is about, from the tags the pipeline's sensors and the Launchpad give it."""
    sha = tags.get("pipelines/sha", "")[:12]
    at = f" at {sha}" if sha else ""
    what = ""
    if tags.get("pipelines/event") == "push":
        what = f"apply{at}"
    elif tags.get("pipelines/pr"):
        what = f"plan of pull request {tags['pipelines/pr']}{at}"
    elif tags.get("pipelines/branch"):
        what = f"plan of branch {tags['pipelines/branch']}{at}"
    elif sha:
        what = f"plan{at}"
    by = tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name")
    return job_name + (f", {what}" if what else "") + (f" ({by})" if by else "")


class RunFollower(threading.Thread):
    """Polls the instance's runs every `interval_s` and prints a line when one starts and when it finishes, each
    with its link; `on_finished` is called after a run finishes. Runs in the storage before the follower started
    are history and not printed."""

    def __init__(self, instance, ui: str, console: Console, on_finished: Callable[[], None] | None = None,
                 interval_s: float = 2.0):
        super().__init__(name="run-follower", daemon=True)
        self._instance, self._ui, self._console = instance, ui, console
        self._on_finished, self._interval_s = on_finished, interval_s
        self._halt = threading.Event()
        self._history = {r.dagster_run.run_id for r in instance.get_run_records(limit=1000)}
        self._runs_started: set[str] = set()
        self._runs_finished: set[str] = set()
        self.outcomes: Counter[str] = Counter()

    def run(self) -> None:
        while not self._halt.wait(self._interval_s):
            try:
                self.poll()
            except Exception as exc:  # a busy SQLite file, say: the next poll sees the same runs
                self._console.say(f"could not read the runs ({type(exc).__name__}: {exc}); trying again",
                                  stamp=True)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def poll(self) -> None:
        finished_now = False
        records = self._instance.get_run_records(limit=200)
        for record in sorted(records, key=lambda r: r.create_timestamp):
            run = record.dagster_run
            if run.run_id in self._history or run.run_id in self._runs_finished:
                continue
            status = run.status.value
            if status not in RUNNING and status not in FINISHED:
                continue  # queued: it gets its line when it starts
            link = f"{self._ui}/runs/{run.run_id}"
            what = describe(run.job_name, dict(run.tags))
            if run.run_id not in self._runs_started:
                self._runs_started.add(run.run_id)
                self._console.say(f"run started: {what} {link}", stamp=True)
            if status in FINISHED:
                self._runs_finished.add(run.run_id)
                self.outcomes[FINISHED[status]] += 1
                took = ""
                if record.start_time and record.end_time:
                    took = f" in {duration(record.end_time - record.start_time)}"
                self._console.say(f"run {FINISHED[status]}{took}: {what} {link}", stamp=True)
                finished_now = True
        if finished_now and self._on_finished:
            self._on_finished()

    def summary(self) -> str:
        """How many runs this session started, and how they ended."""
        started = len(self._runs_started)
        if not started:
            return "no runs"
        unfinished = started - sum(self.outcomes.values())
        parts = [f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items())]
        if unfinished:
            parts.append(f"{unfinished} interrupted")
        return f"{started} run{'s' if started != 1 else ''} ({', '.join(parts)})"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60} s"


@contextmanager
def foreground():
    """Ctrl-C for the demo alone. Under `make run`, the terminal sends Ctrl-C's SIGINT to its foreground process
    group, make's, which holds make and the demo: make would then wait for the demo, remove nothing, and kill
    itself with SIGINT (exit status 130; "make: *** [Makefile:...: run] Error 130" when the demo exits 130). So,
    when the demo shares the terminal's foreground group with a parent, it moves into a group of its own and makes
    that the foreground for its lifetime, as a shell does with a job: Ctrl-C reaches the demo alone, which stops
    everything and exits 0, and make sees that exit status. Ctrl-Z is ignored meanwhile (it would stop the demo
    alone while make waits for it, leaving the terminal to nobody). The terminal goes back to the parent's group
    on the way out. Nothing to do without a terminal, or when the demo already leads its group (started from a
    shell directly)."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    taken = False
    group = os.getpgrp()
    try:
        if group != os.getpid() and _foreground_group(tty) == group:
            os.setpgid(0, 0)
            taken = _give_terminal(tty, os.getpgrp())
            if taken:
                signal.signal(signal.SIGTSTP, signal.SIG_IGN)
            else:  # back with the parent, where Ctrl-C still reaches the demo
                os.setpgid(0, group)
        yield
    finally:
        if taken:
            _give_terminal(tty, group)
        os.close(tty)


def _foreground_group(tty: int) -> int | None:
    try:
        return os.tcgetpgrp(tty)
    except OSError:
        return None


def _give_terminal(tty: int, group: int) -> bool:
    """tcsetpgrp from a background group, which the terminal allows only with SIGTTOU blocked."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(tty, group)
        return True
    except OSError:  # the group is gone (make killed), or the terminal with it
        return False
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
