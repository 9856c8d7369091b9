"""End to end: `dagster dev` with a temporary DAGSTER_HOME, the job launched over GraphQL for a pull request, real
git and Terraform, and the plan comment found on the GitHub fake."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GitRepo
from tests.dagsterui import LAUNCH, GraphQL, free_port, run_logs, wait_for_location, wait_for_run
from tests.fakes.github_fake import GitHubFake

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GH_REPO = "acme/infrastructure-live"
JOB = "infrastructure_plan"
# Usually about 70 s here (about 20 s for `dagster dev` to serve the location, about 40 s for the run); the bound
# only keeps a stuck run from hanging the suite.
DEADLINE_S = 150

UNIT = '''terraform {{
  backend "local" {{}}
}}

resource "null_resource" "item" {{
  count    = {count}
  triggers = {{ version = "v1" }}
}}
'''


@pytest.fixture
def infra(tmp_path):
    """infrastructure-live with two plain Terraform units (local state) added by a pull request branch."""
    work = GitRepo(tmp_path / "work")
    base = work.commit({".pipelines.yml": "deploy_branch: main\n", "README.md": "live\n"}, "init")
    work.git("checkout", "-q", "-b", "feature")
    head = work.commit({"units/alpha/main.tf": UNIT.format(count=1), "units/beta/main.tf": UNIT.format(count=2)},
                       "two units")
    bare = tmp_path / "remote.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    return {"bare": bare, "base": base, "head": head, "work": work}


@contextlib.contextmanager
def dagster_dev_process(tmp_path: Path, settings: dict):
    """`dagster dev` on a free port with a temporary DAGSTER_HOME and `settings` as its PIPELINES_* environment
    (nothing inherited); the whole process group is killed at the end."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "DAGSTER_", "GITHUB_"))}
    env.update(DAGSTER_HOME=str(home), PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", PIPELINES_UI_URL=ui,
               PIPELINES_CACHE_DIR=str(tmp_path / "cache"), TF_IN_AUTOMATION="1", **settings)
    log = (tmp_path / "dagster-dev.log").open("w")
    proc = subprocess.Popen([str(VENV_BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                             "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield {"proc": proc, "graphql": GraphQL(f"{ui}/graphql"), "ui": ui, "home": home,
               "log": tmp_path / "dagster-dev.log"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # dagster dev leaves children behind on SIGTERM
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def dagster_dev(tmp_path, infra, plugin_dir, tf_cli_config):
    fake = GitHubFake().start()
    fake.add_repo(GH_REPO)
    number = fake.add_pull_request(GH_REPO, "feature", head_sha=infra["head"], title="Two units")
    subprocess.run(["git", "--git-dir", str(infra["bare"]), "update-ref", f"refs/pull/{number}/head", infra["head"]],
                   check=True)
    settings = dict(PIPELINES_REPO_URL=str(infra["bare"]), PIPELINES_DEPLOY_BRANCH="main",
                    PIPELINES_TF_PLUGIN_DIR=str(plugin_dir),
                    PIPELINES_GITHUB_REPO=GH_REPO, GITHUB_API_URL=fake.url, GITHUB_TOKEN=fake.token,
                    PIPELINES_MAX_WAVES="2", TF_CLI_CONFIG_FILE=str(tf_cli_config),
                    # the GraphQL launch is the subject here: sensors would add runs of their own for the same PR
                    PIPELINES_SENSORS_DEFAULT_STATUS="stopped")
    try:
        with dagster_dev_process(tmp_path, settings) as dev:
            yield {**dev, "fake": fake, "pr": number}
    finally:
        fake.stop()


def test_pull_request_run_launched_over_graphql_comments_on_the_pull_request(dagster_dev, infra):
    dev = dagster_dev
    deadline = time.monotonic() + DEADLINE_S
    location = wait_for_location(dev["graphql"], dev["proc"], dev["log"], deadline)
    repository = next(r for r in location["repositories"] if JOB in [j["name"] for j in r["jobs"]])
    assert {s["name"] for s in repository["sensors"]} >= {"pull_request_sensor", "deploy_branch_sensor",
                                                          "run_failure_sensor"}

    params = {"selector": {"repositoryLocationName": location["name"], "repositoryName": repository["name"],
                           "jobName": JOB},
              "runConfigData": {"ops": {"orchestrate": {"config": {"pr_number": dev["pr"]}}}},  # GitHub gives the rest
              "executionMetadata": {"tags": [{"key": "pipelines/pr", "value": str(dev["pr"])},
                                             {"key": "pipelines/sha", "value": infra["head"]}]}}
    launched = dev["graphql"](LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    status = wait_for_run(dev["graphql"], run_id, deadline)
    assert status == "SUCCESS", (f"run {run_id} ended {status} (or did not end within {DEADLINE_S}s); its events:\n"
                                 f"{run_logs(dev['graphql'], run_id)}")

    comments = dev["fake"].comments(GH_REPO, dev["pr"])
    assert len(comments) == 1, comments
    body = comments[0]["body"]
    assert infra["head"][:12] in body and f"{dev['ui']}/runs/{run_id}" in body
    assert "| ✅ succeeded | ModuleAdded | `units/alpha`" in body, body
    assert "| ✅ succeeded | ModuleAdded | `units/beta`" in body, body
    assert "1 to add, 0 to change, 0 to destroy" in body and "2 to add, 0 to change, 0 to destroy" in body, body
    assert [s["state"] for s in dev["fake"].statuses(GH_REPO, infra["head"])] == ["pending", "success"]
