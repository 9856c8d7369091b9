"""End to end: the asset graph follows the deploy branch in a running `dagster dev`, without a restart.

The code location starts before the remote is mirrored (no unit assets); the asset graph sensor, started over
GraphQL, mirrors it and reloads the code location through the webserver; a push adding one unit and deleting
another is followed the same way; and the drift job launched over GraphQL runs in a run worker that rebuilds the
reloaded graph, recording the checks in the instance."""

import subprocess
import time

import dagster as dg
import pytest

from tests.conftest import GitRepo
from tests.dagsterui import LAUNCH, run_logs, wait_for_location, wait_for_run
from tests.e2e.test_dagster_dev import dagster_dev_process

DEADLINE_S = 180  # usually about 80 s here; the bound only keeps a stuck server from hanging the suite

UNIT = 'terraform {\n  backend "local" {}\n}\n\nresource "null_resource" "item" {}\n'

ASSET_KEYS = "{ assetNodes { assetKey { path } } }"

START_SENSOR = """
mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } ... on Error { message } } }
"""


def unit_keys(dev) -> set[str]:
    nodes = dev["graphql"](ASSET_KEYS)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]) for n in nodes if n["assetKey"]["path"][0] == "units"}


def wait_for_keys(dev, expected: set[str], deadline: float) -> None:
    found = None
    while time.monotonic() < deadline:
        assert dev["proc"].poll() is None, dev["log"].read_text()[-4000:]
        try:
            found = unit_keys(dev)
        except (OSError, AssertionError):  # the webserver is swapping the location: ask again
            found = None
        if found == expected:
            return
        time.sleep(1)
    pytest.fail(f"the asset graph did not become {sorted(expected)} (last seen: {found}):\n"
                f"{dev['log'].read_text()[-4000:]}")


@pytest.fixture
def remote(tmp_path):
    work = GitRepo(tmp_path / "work")
    work.commit({".pipelines.yml": "deploy_branch: main\n", "units/alpha/main.tf": UNIT,
                 "units/beta/main.tf": UNIT}, "two units")
    bare = tmp_path / "remote.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    work.git("remote", "add", "origin", str(bare))
    work.bare = bare
    return work


def test_asset_graph_follows_the_deploy_branch_without_a_restart(tmp_path, remote, plugin_dir, tf_cli_config):
    settings = dict(PIPELINES_REPO_URL=f"file://{remote.bare}", PIPELINES_TF_PLUGIN_DIR=str(plugin_dir),
                    TF_CLI_CONFIG_FILE=str(tf_cli_config), PIPELINES_SENSORS_DEFAULT_STATUS="stopped",
                    PIPELINES_SENSOR_INTERVAL_S="2")
    with dagster_dev_process(tmp_path, settings) as dev:
        deadline = time.monotonic() + DEADLINE_S
        location = wait_for_location(dev["graphql"], dev["proc"], dev["log"], deadline)
        assert unit_keys(dev) == set()  # loaded before anything was mirrored: quickly, without unit assets
        assert "not mirrored" in dev["log"].read_text()
        [repository] = location["repositories"]
        selector = {"repositoryLocationName": location["name"], "repositoryName": repository["name"]}
        started = dev["graphql"](START_SENSOR, {"selector": {**selector, "sensorName": "asset_graph_sensor"}})
        assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started

        wait_for_keys(dev, {"units/units/alpha", "units/units/beta"}, deadline)
        remote.commit({"units/gamma/main.tf": UNIT, "units/beta/main.tf": None}, "gamma in, beta out")
        remote.git("push", "-q", "origin", "main")
        wait_for_keys(dev, {"units/units/alpha", "units/units/gamma"}, deadline)

        launched = dev["graphql"](LAUNCH, {"params": {"selector": {**selector, "jobName": "drift_detection"}}})
        assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["launchRun"]["run"]["runId"]
        status = wait_for_run(dev["graphql"], run_id, deadline)
        assert status == "SUCCESS", f"drift run {run_id} ended {status}:\n{run_logs(dev['graphql'], run_id)}"

        head = subprocess.run(["git", "--git-dir", str(remote.bare), "rev-parse", "main"], capture_output=True,
                              text=True, check=True).stdout.strip()
        with dg.DagsterInstance.from_config(str(dev["home"])) as instance:
            for unit in ("alpha", "gamma"):  # merged, never applied: reality lacks what the code has
                key = dg.AssetCheckKey(dg.AssetKey(["units", "units", unit]), "drift")
                record = instance.get_latest_asset_check_evaluation_record(key)
                evaluation = record.event.dagster_event.event_specific_data
                assert record.run_id == run_id and not evaluation.passed
                assert evaluation.severity is dg.AssetCheckSeverity.WARN
                assert evaluation.metadata["plan"].value == "1 to add, 0 to change, 0 to destroy"
                assert evaluation.metadata["commit"].value == head
