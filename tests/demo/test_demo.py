"""The embedded default: the demo repository as the orchestrator sees it, and `make run`'s command itself (first
start with the initial apply through the AWS emulator, Ctrl-C with nothing left running, a second start that reuses
the repositories, the Dagster history and the Terraform states)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

from pipelines_dagster.core.model import Event
from pipelines_dagster.core.orchestrator import detect_changes
from pipelines_dagster.demo import layout
from pipelines_dagster.demo.run import create, environment
from tests.dagsterui import LAUNCH, RUNS, command, emulator_port, free_port, port_open, running_demo, wait_for_run
from tests.demo.conftest import wait_for_text

VENV_BIN = Path(sys.executable).parent
# A first start here: about 30 s for the initial apply of five units, 20 s for dagster dev; bounds, not estimates.
FIRST_START_S = 240
LATER_START_S = 120


def _commit(work: Path, rel: str, old: str, new: str) -> None:
    path = work / rel
    text = path.read_text()
    assert old in text, (rel, text)
    path.write_text(text.replace(old, new))
    subprocess.run(["git", "commit", "-qam", f"edit {rel}"], cwd=work, check=True)


@pytest.mark.parametrize("rel, old, new, expected", [
    ("_envcommon/app.hcl", '"2"', '"3"', ("EnvCommonChanged", {"dev/us-east-1/dev/app", "prod/us-east-1/prod/app"})),
    ("dev/account.hcl", '"dev"', '"development"',
     ("HCLChanged", {"dev/us-east-1/dev/network", "dev/us-east-1/dev/app"})),
    ("prod/us-east-1/prod/env.hcl", '"prod"', '"production"',
     ("HCLChanged", {"prod/us-east-1/prod/network", "prod/us-east-1/prod/app"})),
    ("root.hcl", "platform-team", "infra-team", ("HCLChanged", set(layout.UNITS))),
    ("dev/us-east-1/dev/network/main.tf", "# The network", "# The main network",
     ("ModuleChanged", {"dev/us-east-1/dev/network"})),
])
def test_demo_configuration_files_plan_exactly_the_units_that_read_them(tmp_path, rel, old, new, expected):
    demo = create(tmp_path / "demo")
    info = demo.info()
    initial = detect_changes(git.Repo(demo.work), info["base"], info["head"], Event.PUSH)
    assert not initial.errors and not initial.warnings, initial.to_dict()
    assert {(c.type.value, c.unit, c.account) for c in initial.changes} == {
        ("ModuleAdded", unit, unit.split("/")[0]) for unit in layout.UNITS}
    waves = {c.unit: c.wave for c in initial.changes}
    for unit, deps in layout.DEPENDENCIES.items():  # the chain: every unit after what it depends on
        assert all(waves[d] < waves[unit] for d in deps), waves

    _commit(demo.work, rel, old, new)
    change_set = detect_changes(git.Repo(demo.work), "HEAD~1", "HEAD", Event.PULL_REQUEST)
    assert not change_set.errors and not change_set.warnings, change_set.to_dict()
    assert ({c.type.value for c in change_set.changes}, {c.unit for c in change_set.changes}) == (
        {expected[0]}, expected[1])
    assert all(c.triggers == [rel] for c in change_set.changes)


def test_make_run_starts_everything_ctrl_c_stops_everything_and_a_second_start_reuses_the_state(tmp_path):
    folder, port = tmp_path / "demo", free_port()
    with running_demo(folder, port, tmp_path / "first.log", FIRST_START_S) as first:
        commands = [command(p) for p in first["tree"]]
        aws_up = port_open(first["aws_port"])
        # Ctrl-C while a run plans the units: its worker and the terraform processes must go too
        [repository] = first["location"]["repositories"]
        launched = first["graphql"](LAUNCH, {"params": {"selector": {
            "repositoryLocationName": first["location"]["name"], "repositoryName": repository["name"],
            "jobName": "drift_detection"}}})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        assert wait_for_run(first["graphql"], launched["run"]["runId"], time.monotonic() + 60,
                            until=("STARTED",)) == "STARTED"
        wait_for_text((tmp_path / "first.log").read_text, "run started: drift_detection",
                      lambda: first["proc"].poll() is None, 30)
    log = (tmp_path / "first.log").read_text()

    assert any("dagster_webserver" in c for c in commands) and any("dagster._daemon" in c for c in commands), commands
    assert aws_up
    assert first["exit_code"] == 0, log
    assert first["left_running"] == [], f"still running after Ctrl-C: {first['left_running']}\n{log}"
    assert not port_open(port) and not port_open(first["aws_port"])
    assert "applying the demo units once" in log and "applied the demo units" in log, log
    # the terminal: the run's lines, and Ctrl-C during it ends with one line, without tracebacks or warnings
    assert "run started: drift_detection" in log and "Traceback" not in log and "Warning" not in log, log
    assert log.splitlines()[-1].startswith("stopping... stopped after "), log
    assert "; 5 Terraform state(s) saved in " in log.splitlines()[-1], log
    saved = folder / "aws-states"
    for unit, component in layout.UNITS.items():  # each state in its own account's bucket
        state = json.loads((saved / layout.ACCOUNTS[unit.split("/")[0]] / unit / "terraform.tfstate").read_text())
        instances = [r for r in state["resources"] if r["type"] == "null_resource"][0]["instances"]
        assert len(instances) == int(layout.COMPONENTS[component]["instances"]), (unit, state)
    info = json.loads((folder / "demo.json").read_text())
    assert info["applied"] is True

    with running_demo(folder, port, tmp_path / "second.log", LATER_START_S) as second:
        runs = second["graphql"](RUNS)["runsOrError"]["results"]
        # the restored states agree with the units: a plan with the unit's account role finds nothing to do
        env = environment(create(folder), f"http://127.0.0.1:{emulator_port(tmp_path / 'second.log')}", port)
        plan = subprocess.run([str(VENV_BIN / "pipelines-dagster"), "execute", "--repo", env["PIPELINES_REPO_URL"],
                               "--ref", "main", "--unit", "dev/us-east-1/dev/app", "--action", "plan",
                               "--event", "push", "--format", "json"], env=env, capture_output=True, text=True)
    log = (tmp_path / "second.log").read_text()
    assert second["exit_code"] == 0 and second["left_running"] == [], (second["left_running"], log)
    assert "(5 Terraform state(s) restored)" in log and "applying" not in log, log
    assert json.loads((folder / "demo.json").read_text()) == info  # the same repositories, not created again
    initial = [r["status"] for r in runs if {t["key"]: t["value"] for t in r["tags"]}.get("pipelines/source") == "cli"]
    assert initial == ["SUCCESS"], runs  # the first start's initial apply, kept in the Dagster history
    result = json.loads(plan.stdout or "{}")
    assert plan.returncode == 0 and result.get("status") == "no_changes", (plan.stdout[-3000:], plan.stderr[-3000:])
    assert result["account"] == "dev" and result["role_arn"] == "arn:aws:iam::222222222222:role/pipelines-apply"
