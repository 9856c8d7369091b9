"""`make run` in a terminal (a real pseudo-terminal, make as its foreground job, Ctrl-C typed into it): the
first lines name the log file, one line when a run starts and one when it finishes with its link, then a quiet
minute at idle, and Ctrl-C ends with one line and exit status 0 (no "make: *** ... Error 130")."""

import io
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipelines_dagster.demo.terminal import Console, DagsterOutput
from tests.dagsterui import ROOT, command, free_port
from tests.demo.conftest import demo_environment, running, wait_for_text

START_S = 120  # a start on a prepared folder takes about 20 s here; bounds, not estimates
RUN_S = 120
IDLE_S = 60
UNIT = "dev/us-east-1/dev/network/main.tf"


class Terminal:
    """A command in a pseudo-terminal of its own (its session's controlling terminal, the command its foreground
    process group, as a shell runs a job): what it prints, and the keys typed into it."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]):
        self.pid, self._fd = pty.fork()
        if self.pid == 0:  # the child: nothing but exec
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self._chunks: list[bytes] = []
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 4096)
            except OSError:  # EIO: every process holding the terminal has gone
                return
            if not data:
                return
            self._chunks.append(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def lines(self) -> list[str]:
        return [line for line in self.text().split("\n") if line.strip()]

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is None

    def type(self, keys: bytes) -> None:
        os.write(self._fd, keys)

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
            pytest.fail(f"still running {timeout_s} s after Ctrl-C:\n{self.text()}")
        self._reader.join(timeout=5)
        os.close(self._fd)
        assert self.status is not None
        return self.status


def _push_a_branch(work: Path, branch: str) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=work, check=True, capture_output=True, text=True).stdout.strip()

    git("checkout", "-q", "-b", branch)
    path = work / UNIT
    path.write_text(path.read_text().replace("# The network", "# The main network"))
    git("commit", "-qam", "A comment")
    git("push", "-q", "origin", branch)
    return git("rev-parse", "HEAD")


def test_make_run_is_quiet_prints_a_line_per_run_and_ctrl_c_ends_with_one_line_and_status_0(tmp_path,
                                                                                           prepared_demo):
    port = free_port()
    venv = Path(sys.executable).parent.parent
    head = _push_a_branch(prepared_demo / "live", "one-comment")  # planned as soon as the sensors look
    terminal = Terminal(["make", "--no-print-directory", "run", f"PORT={port}", f"FOLDER={prepared_demo}",
                         f"VENV={venv}"], ROOT, demo_environment())
    tree: list[psutil.Process] = []
    try:
        wait_for_text(terminal.text, "Dagster UI ready", terminal.alive, START_S)
        wait_for_text(terminal.text, "run succeeded", terminal.alive, RUN_S)
        before_idle = terminal.lines()
        time.sleep(IDLE_S)
        idle_lines = terminal.lines()[len(before_idle):]
        tree = psutil.Process(terminal.pid).children(recursive=True)

        terminal.type(b"\x03")  # Ctrl-C
        status = terminal.wait(60)
    finally:
        if terminal.alive():
            os.kill(terminal.pid, 9)
        left = [p for p in tree if running(p)]
        for process in left:
            process.kill()
    output = terminal.text()
    run_lines = [line for line in before_idle if " run " in line]
    start_lines = [line for line in before_idle if " run " not in line]
    stop_lines = terminal.lines()[len(before_idle) + len(idle_lines):]

    log = prepared_demo / "logs" / "dagster.log"
    assert start_lines[0] == f"pipelines-dagster demo in {prepared_demo}; full logs in {log}", output
    assert any(line.startswith("watching file://") for line in start_lines), output
    assert len(start_lines) <= 6, output
    assert len(idle_lines) <= 3 and not any("arning" in line for line in idle_lines), idle_lines

    link = re.compile(rf"http://127\.0\.0\.1:{port}/runs/[0-9a-f-]{{36}}$")
    assert len(run_lines) == 2, run_lines
    started, finished = run_lines
    what = f"infrastructure_plan, plan of branch one-comment at {head[:12]} (pull_request_sensor)"
    assert re.match(r"\d\d:\d\d:\d\d run started: ", started) and what in started and link.search(started), started
    assert re.match(r"\d\d:\d\d:\d\d run succeeded in \d+ s: ", finished) and what in finished, finished
    assert link.search(started)[0] == link.search(finished)[0], run_lines

    assert len(stop_lines) == 1, stop_lines
    assert re.fullmatch(r"\^Cstopping\.\.\. stopped after \d+ (s|min \d+ s): 1 run \(1 succeeded\); "
                        rf"0 Terraform state\(s\) saved in {re.escape(str(prepared_demo / 'aws-states'))}",
                        stop_lines[0]), stop_lines
    assert status == 0, output
    assert "make:" not in output and "Error" not in output and "Traceback" not in output, output
    assert [command(p) for p in left] == [], output

    # dagster dev's own output went to the log, without the warnings nobody running the demo can act on
    dagster_log = log.read_text()
    assert "Checking for new runs for sensor: pull_request_sensor" in dagster_log
    assert "Serving dagster-webserver on" in dagster_log
    for noise in ("SupersessionWarning", "BetaWarning", "Found a dagster instance configuration", "\x1b["):
        assert noise not in dagster_log, noise


def test_dagster_devs_output_goes_to_the_log_and_only_its_errors_to_the_terminal(tmp_path):
    """What `dagster dev` prints, through a real pipe: all of it into the log without colour codes; on the
    terminal, when the UI is served, and the first line of each distinct error that is not a run's own event."""
    ansi = "\x1b[32m2026-01-02 03:04:05 +0000\x1b[0m - {logger} - \x1b[34m{level}\x1b[0m - {message}\n"
    run_id = "70cd80d7-1662-4ffe-872f-fdb96115ba9f"
    written = [
        ansi.format(logger="dagster", level="INFO", message="Launching Dagster services..."),
        ansi.format(logger="dagster.daemon.SensorDaemon", level="INFO", message="Checking for new runs for sensor"),
        ansi.format(logger="dagster", level="WARNING", message="some warning of Dagster's"),
        ansi.format(logger="dagster-webserver", level="INFO",
                    message="Serving dagster-webserver on http://127.0.0.1:3000 in process 1"),
        ansi.format(logger="dagster.daemon.SensorDaemon", level="ERROR",
                    message="Sensor daemon caught an error for sensor pull_request_sensor"),
        "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n",
        ansi.format(logger="dagster.daemon.SensorDaemon", level="ERROR",
                    message="Sensor daemon caught an error for sensor pull_request_sensor"),
        ansi.format(logger="dagster", level="ERROR", message=f"infrastructure_plan - {run_id} - STEP_FAILURE"),
    ]
    read_end, write_end = os.pipe()
    log = tmp_path / "dagster.log"
    terminal = io.StringIO()
    with os.fdopen(read_end, "rb") as pipe:
        output = DagsterOutput(pipe, log, Console(out=terminal, err=terminal), "http://127.0.0.1:3000")
        output.start()
        with os.fdopen(write_end, "wb") as out:
            out.write("".join(written).encode())
        output.join(timeout=10)

    assert log.read_text() == re.sub(r"\x1b\[[0-9;]*m", "", "".join(written))
    assert terminal.getvalue().splitlines() == [
        "Dagster UI ready: http://127.0.0.1:3000",
        f"{terminal.getvalue().splitlines()[1][:8]} error from dagster.daemon.SensorDaemon: Sensor daemon caught an "
        f"error for sensor pull_request_sensor (details in {log})"], terminal.getvalue()
    assert output.ready.is_set()
