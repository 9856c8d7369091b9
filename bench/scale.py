"""Scale: one pull request changing 200 units (a null resource each, local state) planned in one run of
`dagster dev`, launched over GraphQL as the Launchpad does; then the run's page: the run's event count, and the
time the GraphQL queries behind the UI's run page take (the run with its execution plan and step stats, and every
event of its log, as the page's log subscription reads them) and, with Chromium installed, the page itself.

    .venv/bin/python bench/scale.py [--changes 200] [--parallel 4] [--timeout 3600]

Local mode (no GitHub): the report is the run's metadata. Sensors are stopped, so the one run is the launched one.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines_dagster.demo.terraform import install_null_provider, write_cli_config  # noqa: E402
from tests.dagsterui import (  # noqa: E402
    CHROMIUM,
    LAUNCH,
    GraphQL,
    chromium_page,
    run_logs,
    wait_for_location,
    wait_for_run,
)
from tests.e2e.test_dagster_dev import dagster_dev_process  # noqa: E402

JOB = "infrastructure_plan"

UNIT = '''terraform {{
  backend "local" {{}}
}}

resource "null_resource" "item" {{
  triggers = {{ unit = "{name}" }}
}}
'''

# what the run page asks for the run itself (Dagster's RunRootQuery and the Gantt chart's plan and step stats)
RUN_PAGE = """
query RunPage($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
  id runId status startTime endTime updateTime jobName canTerminate hasReExecutePermission
  tags { key value } stepKeysToExecute
  executionPlan { artifactsPersisted steps { key kind solidHandleID inputs { name dependsOn { key kind } }
                                             outputs { name } metadata { key value } } }
  stepStats { stepKey status startTime endTime attempts { startTime endTime } markers { startTime endTime } } } } }
"""

# the page's log: every event, in the chunks the UI reads them
LOGS = """
query Logs($id: ID!, $after: String, $limit: Int) { logsForRun(runId: $id, afterCursor: $after, limit: $limit) {
  __typename ... on EventConnection { cursor hasMore events { __typename
    ... on MessageEvent { runId message timestamp level stepKey eventType }
    ... on MaterializationEvent { assetKey { path } } } } } }
"""
LOG_CHUNK = 1000


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def make_repo(tmp: Path, changes: int) -> tuple[Path, str, str]:
    """A bare remote whose branch `feature` adds `changes` units to `main`."""
    work = tmp / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / ".pipelines.yml").write_text("deploy_branch: main\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    base = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "-b", "feature")
    for i in range(changes):
        unit = work / "units" / f"u{i:03d}"
        unit.mkdir(parents=True)
        (unit / "main.tf").write_text(UNIT.format(name=unit.name))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"{changes} units")
    head = git(work, "rev-parse", "HEAD")
    bare = tmp / "remote.git"
    git(tmp, "clone", "-q", "--bare", str(work), str(bare))
    return bare, base, head


def timed(fn, repeat: int = 3) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def all_events(graphql: GraphQL, run_id: str) -> list[dict]:
    events, after = [], None
    while True:
        page = graphql(LOGS, {"id": run_id, "after": after, "limit": LOG_CHUNK}, timeout=120)["logsForRun"]
        assert page["__typename"] == "EventConnection", page
        events += page["events"]
        after = page["cursor"]
        if not page["hasMore"]:
            return events


def browser_load(url: str, tmp: Path) -> dict[str, float] | None:
    """Seconds until the run page in Chromium shows the run's final status, and its last step in the log."""
    try:
        from playwright.sync_api import expect
    except ImportError:
        return None
    if not CHROMIUM.exists():
        return None
    with chromium_page(tmp / "chromium-profile") as page:
        figures = {}
        for attempt in ("first", "again"):
            started = time.perf_counter()
            page.goto(url)
            expect(page.get_by_text(re.compile(r"^(Success|Failure)$")).first).to_be_visible(timeout=300_000)
            status_s = time.perf_counter() - started
            # the log scrolled to its end: the run's last event
            expect(page.get_by_text(re.compile(r"Finished execution of run")).first).to_be_visible(
                timeout=300_000)
            figures[attempt] = (status_s, time.perf_counter() - started)
        if os.environ.get("BENCH_KEEP"):
            page.screenshot(path=str(tmp / "run-page.png"))
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the run may take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(os.environ.get("BENCH_KEEP") or tmp_name)
        bare, base, head = make_repo(tmp, args.changes)
        settings = dict(PIPELINES_REPO_URL=str(bare), PIPELINES_TF_PLUGIN_DIR=str(install_null_provider(tmp / "p")),
                        TF_CLI_CONFIG_FILE=str(write_cli_config(tmp / "terraformrc")),
                        PIPELINES_MAX_PARALLEL=str(args.parallel), PIPELINES_SENSORS_DEFAULT_STATUS="stopped")
        with dagster_dev_process(tmp, settings) as dev:
            graphql = dev["graphql"]
            location = wait_for_location(graphql, dev["proc"], dev["log"], time.monotonic() + 300)
            repository = next(r for r in location["repositories"] if JOB in [j["name"] for j in r["jobs"]])
            params = {"selector": {"repositoryLocationName": location["name"],
                                   "repositoryName": repository["name"], "jobName": JOB},
                      "runConfigData": {"ops": {"orchestrate": {"config": {
                          "base_ref": base, "head_ref": head}}}}}
            started = time.perf_counter()
            launched = graphql(LAUNCH, {"params": params})["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]
            status = wait_for_run(graphql, run_id, time.monotonic() + args.timeout)
            wall = time.perf_counter() - started
            if status != "SUCCESS":
                raise SystemExit(f"run {run_id} ended {status} after {wall:.0f} s:\n{run_logs(graphql, run_id)}")

            run_times, run = timed(lambda: graphql(RUN_PAGE, {"id": run_id}, timeout=120)["runOrError"])
            log_times, events = timed(lambda: all_events(graphql, run_id))
            page_times, _ = timed(lambda: urllib.request.urlopen(f"{dev['ui']}/runs/{run_id}", timeout=60).read())
            plans = [s for s in run["stepStats"] if s["stepKey"].startswith("plan[")]
            succeeded = sum(s["status"] == "SUCCESS" for s in plans)
            if len(plans) != args.changes or succeeded != args.changes:
                raise SystemExit(f"expected {args.changes} succeeded plan steps, got {succeeded} of {len(plans)}")
            steps = len(run["stepStats"])
            print(f"{args.changes} changes, parallel {args.parallel}: run SUCCESS, {steps} steps "
                  f"({succeeded} plan steps succeeded), {len(events)} events; launch to finish {wall:.0f} s, "
                  f"the run itself {run['endTime'] - run['startTime']:.0f} s "
                  f"({(run['endTime'] - run['startTime']) / args.changes:.2f} s per change)", flush=True)
            print(f"run page GraphQL: the run with its plan and step stats (runOrError) "
                  f"{min(run_times):.2f} s (first {run_times[0]:.2f} s); its {len(events)} events (logsForRun, "
                  f"{-(-len(events) // LOG_CHUNK)} chunks of {LOG_CHUNK}) {min(log_times):.2f} s "
                  f"(first {log_times[0]:.2f} s, median {statistics.median(log_times):.2f} s); "
                  f"/runs/{run_id[:8]}... HTML {min(page_times):.3f} s", flush=True)
            browser = browser_load(f"{dev['ui']}/runs/{run_id}", tmp)
            if browser:
                print("run page in Chromium: " + "; ".join(
                    f"{name}: status shown {status_s:.1f} s, last event shown {last_s:.1f} s"
                    for name, (status_s, last_s) in browser.items()))
            else:
                print("run page in Chromium: skipped (no /usr/bin/chromium or playwright)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
