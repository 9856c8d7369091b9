"""One demo per folder: a second start on a folder in use is refused at once, naming the running demo; a demo
killed with SIGKILL holds nothing back (the lock goes with its process, and what it left running is stopped)."""

import os
import signal
import subprocess
import sys
import time

import psutil

from tests.dagsterui import ROOT, command, free_port, start_demo
from tests.demo.conftest import demo_environment, running, wait_for_text

START_S = 120  # a start on a prepared folder takes about 20 s here; a bound, not an estimate


def test_a_second_demo_on_a_folder_in_use_is_refused_at_once_naming_the_first(tmp_path, prepared_demo):
    port, log = free_port(), tmp_path / "first.log"
    first = start_demo(prepared_demo, port, log)
    try:
        wait_for_text(log.read_text, "AWS emulator:", lambda: first.poll() is None, START_S)
        began = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "pipelines_dagster.demo", "--folder", str(prepared_demo),
                                 "--port", str(free_port())], cwd=ROOT, env=demo_environment(),
                                capture_output=True, text=True, timeout=60)
        took = time.monotonic() - began
        first_alive = first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first_code = first.wait(timeout=60)

    assert second.returncode == 1, (second.returncode, second.stdout, second.stderr)
    assert took < 10, took
    assert f"a demo is already running on {prepared_demo} (pid {first.pid}, UI http://127.0.0.1:{port}" \
        in second.stderr, second.stderr
    assert "Ctrl-C in its terminal" in second.stderr and "another folder" in second.stderr, second.stderr
    assert second.stdout == ""  # nothing of its own started: no emulator, no dagster dev
    assert first_alive and first_code == 0, log.read_text()


def test_a_demo_killed_with_sigkill_does_not_block_the_next_start(tmp_path, prepared_demo):
    port, log = free_port(), tmp_path / "killed.log"
    killed = start_demo(prepared_demo, port, log)
    try:
        wait_for_text(log.read_text, "Dagster UI ready", lambda: killed.poll() is None, START_S)
        tree = psutil.Process(killed.pid).children(recursive=True)
    finally:
        killed.kill()  # no clean-up of its own: its lock, its dagster dev, its emulator
        killed.wait()
    after, after_log = None, tmp_path / "next.log"
    try:
        after = start_demo(prepared_demo, port, after_log)  # at once, on the same folder and the same port
        # its own dagster dev serves the port (the killed one's webserver would have kept it)
        wait_for_text(after_log.read_text, "Dagster UI ready", lambda: after.poll() is None, START_S)
        left_by_the_killed = [command(p) for p in tree if running(p)]
        after_tree = psutil.Process(after.pid).children(recursive=True)
    finally:
        if after is not None:
            os.killpg(after.pid, signal.SIGINT)
            after_code = after.wait(timeout=60)
        for process in tree:
            if running(process):
                process.kill()

    output = after_log.read_text()
    assert "already running" not in output and "in use" not in output, output
    assert left_by_the_killed == [], left_by_the_killed
    assert after_code == 0 and [command(p) for p in after_tree if running(p)] == [], output
