"""Driving a running `dagster dev` from tests: its GraphQL API, its pages in Chromium, and the demo command
(`make run`) as a process."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`make system-packages`)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium_page(profile: Path):
    """A headless Chromium page the size of the README's screenshots, with its profile in `profile`, that declines
    Dagster's one-time invitation to join its community whenever it shows up."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())
            yield page
        finally:
            context.close()


WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name
        locationOrLoadError { __typename
          ... on RepositoryLocation { name repositories { name jobs { name } sensors { name } schedules { name } } }
          ... on PythonError { message stack } } } }
    ... on PythonError { message } } }
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message } } }
"""

RUN_STATUS = "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"

RUNS = """
query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId status tags { key value } } } } }
"""

RUN_LOGS = """
query Logs($id: ID!) { logsForRun(runId: $id) { __typename
  ... on EventConnection { events { __typename
      ... on MessageEvent { message stepKey level }
      ... on ErrorEvent { error { message stack } } } } } }
"""

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class GraphQL:
    def __init__(self, url: str):
        self.url = url

    def __call__(self, query: str, variables: dict | None = None, timeout: float = 10) -> dict:
        request = urllib.request.Request(self.url, data=json.dumps({"query": query, "variables": variables or {}})
                                         .encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]


def wait_for_location(graphql: GraphQL, proc: subprocess.Popen, log: Path, deadline: float) -> dict:
    """The loaded code location (GraphQL answers, and the workspace has loaded our definitions)."""
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the process exited:\n{log.read_text()[-4000:]}"
        try:
            data = graphql(WORKSPACE_QUERY, timeout=5)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = exc
        else:
            last = data
            for entry in data.get("locationEntries", []):
                location = entry.get("locationOrLoadError") or {}
                assert location.get("__typename") != "PythonError", location
                if location.get("__typename") == "RepositoryLocation":
                    return location
        time.sleep(0.5)
    pytest.fail(f"GraphQL did not serve the code location in time (last answer: {last}):\n{log.read_text()[-4000:]}")


def wait_for_run(graphql: GraphQL, run_id: str, deadline: float, until=FINISHED) -> str | None:
    """The run's status once it is one of `until` (by default, final), or its last status at the deadline."""
    status = None
    while time.monotonic() < deadline:
        status = graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status in until:
            break
        time.sleep(1)
    return status


def run_logs(graphql: GraphQL, run_id: str) -> str:
    events = graphql(RUN_LOGS, {"id": run_id})["logsForRun"].get("events", [])
    lines = []
    for e in events:
        error = (e.get("error") or {})
        lines.append(f"{e['__typename']} {e.get('stepKey') or ''}: {e.get('message') or ''} "
                     f"{error.get('message') or ''}".rstrip())
    return "\n".join(lines[-80:])


def start_demo(folder: Path, port: int, log: Path) -> subprocess.Popen:
    """`make run`'s command in a session of its own, as a terminal would run it (Ctrl-C = SIGINT to the group)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "DAGSTER_", "GITHUB_"))}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines_dagster.demo", "--folder", str(folder),
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def emulator_port(log: Path) -> int:
    match = re.search(r"AWS emulator: http://127\.0\.0\.1:(\d+)", log.read_text())
    assert match, log.read_text()
    return int(match.group(1))


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def running_demo(folder: Path, port: int, log: Path, timeout_s: float):
    """The demo command, up until its code location is served; on leaving, Ctrl-C as in a terminal. The state
    tells what was seen: `exit_code`, and `left_running`, the processes of the demo's tree that outlived it
    (killed then, so that a failed test leaves nothing behind)."""
    proc = start_demo(folder, port, log)
    state = {"proc": proc, "tree": [], "url": f"http://127.0.0.1:{port}"}
    try:
        state["graphql"] = GraphQL(f"{state['url']}/graphql")
        state["location"] = wait_for_location(state["graphql"], proc, log, time.monotonic() + timeout_s)
        state["tree"] = psutil.Process(proc.pid).children(recursive=True)
        state["aws_port"] = emulator_port(log)
        yield state
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):  # what started since, such as a run's worker
            known = {p.pid for p in state["tree"]}
            state["tree"] += [p for p in psutil.Process(proc.pid).children(recursive=True) if p.pid not in known]
        try:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: SIGINT to the foreground group
            state["exit_code"] = proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            proc.kill()
            state["exit_code"] = proc.wait()
        left = [p for p in state["tree"] if _running(p)]
        state["left_running"] = [command(p) for p in left]
        for process in left:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()[:6])
    except psutil.NoSuchProcess:
        return f"pid {process.pid} (gone)"
