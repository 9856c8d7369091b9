"""Drift detection with real parts: units applied by the executor to S3 state in the AWS emulator, state changed
behind Terraform's back with `terraform state rm`, the drift job loaded from the code location and run by Dagster,
and the drift issue on the GitHub fake."""

import subprocess
import uuid
from pathlib import Path

import dagster as dg
import pytest

from pipelines_dagster.core.executor import ExecuteRequest
from pipelines_dagster.core.model import Action, Event
from pipelines_dagster.definitions import defs
from tests.conftest import ACCOUNTS, REGION, null_unit, terraform_binary
from tests.defs.conftest import GH_REPO

DEV = ACCOUNTS["dev"]


@pytest.fixture
def env(repo, aws, plugin_dir, tf_cli_config, token_file, tmp_path, monkeypatch):
    for var in ("PIPELINES_GITHUB_REPO", "PIPELINES_DEPLOY_BRANCH", "PIPELINES_DRIFT_PATHS", "PIPELINES_UI_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", f"{Path(terraform_binary()).parent}:/usr/bin:/bin")
    monkeypatch.setenv("PIPELINES_REPO_URL", str(repo.path))
    monkeypatch.setenv("PIPELINES_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIPELINES_TF_PLUGIN_DIR", str(plugin_dir))
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tf_cli_config))
    return monkeypatch


def applied_units(repo, aws, make_executor, count: int) -> list[str]:
    units = [f"dev/drift-{uuid.uuid4().hex[:6]}" for _ in range(count)]
    head = repo.commit({f"{u}/main.tf": null_unit(aws.endpoint, u, count=2) for u in units})
    executor = make_executor()
    for u in units:
        result = executor.execute(ExecuteRequest(unit=u, action=Action.APPLY, event=Event.PUSH, head=head))
        assert result.ok, result.message + result.output
    return units


class BehindTerraformsBack:
    """Someone with the account's credentials working on a unit's state by hand, in their own checkout."""

    def __init__(self, repo, aws, unit: str, plugin_dir, tf_cli_config, tmp_path):
        self.dir = tmp_path / "by-hand"
        self.dir.mkdir()
        (self.dir / "main.tf").write_text((repo.path / unit / "main.tf").read_text())
        creds = aws.assume(DEV, role="someone")
        self.env = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(tf_cli_config), "AWS_REGION": REGION,
                    "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
                    "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
                    "AWS_SESSION_TOKEN": creds["aws_session_token"]}
        self.terraform("init", "-input=false", f"-plugin-dir={plugin_dir}")
        (self.dir / "backup.tfstate").write_text(self.terraform("state", "pull"))

    def terraform(self, *args: str) -> str:
        proc = subprocess.run([terraform_binary(), *args], cwd=self.dir, env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def forget(self, address: str) -> None:
        self.terraform("state", "rm", address)

    def restore(self) -> None:
        self.terraform("state", "push", "-force", "backup.tfstate")


def run_drift(instance, paths: list[str] | None = None):
    job = defs().resolve_job_def("drift_detection")
    config = {"ops": {"drift_plans": {"config": {"paths": paths}}}} if paths is not None else None
    result = job.execute_in_process(instance=instance, run_config=config)
    return result, {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}


def test_drift_fails_the_check_opens_the_issue_and_restoring_closes_it(repo, aws, make_executor, env, github,
                                                                       plugin_dir, tf_cli_config, tmp_path):
    env.setenv("PIPELINES_GITHUB_REPO", GH_REPO)
    first, second = applied_units(repo, aws, make_executor, 2)
    name_1, name_2 = first.split("/")[-1], second.split("/")[-1]
    instance = dg.DagsterInstance.ephemeral()

    result, checks = run_drift(instance)
    assert {n: c.passed for n, c in checks.items()} == {name_1: True, name_2: True}
    assert result.dagster_run.tags["pipelines/apply-lock"] == GH_REPO.replace("/", "_")  # queued with applies
    assert github.issues(GH_REPO) == []

    by_hand = BehindTerraformsBack(repo, aws, first, plugin_dir, tf_cli_config, tmp_path)
    by_hand.forget("null_resource.item[0]")
    _, checks = run_drift(instance)
    assert checks[name_2].passed and not checks[name_1].passed
    drifted = checks[name_1]
    assert drifted.severity is dg.AssetCheckSeverity.WARN
    assert drifted.metadata["plan"].value == "1 to add, 0 to change, 0 to destroy"
    assert [(r.data["address"], r.data["action"]) for r in drifted.metadata["resource_changes"].records] == [
        ("null_resource.item[0]", "create")]
    [issue] = github.issues(GH_REPO)
    assert issue["state"] == "open" and "1 unit drifted" in issue["title"]
    assert f"`{first}`" in issue["body"] and second not in issue["body"]

    github.clear_log()
    run_drift(instance)  # the same drift: the issue stays as it is
    # a result reported by hand (the UI's or the API's "report asset check") is no check of the unit
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["units", *first.split("/")]), check_name="drift", passed=True,
        metadata={"state": "clean"}))
    run_drift(instance, paths=[second])  # only the other unit: the issue still lists the drifted one
    assert github.writes() == [] and len(github.issues(GH_REPO)) == 1

    by_hand.restore()
    _, checks = run_drift(instance)
    assert {n: c.passed for n, c in checks.items()} == {name_1: True, name_2: True}
    [issue] = github.issues(GH_REPO)
    assert issue["state"] == "closed"
    assert "Every unit is clean" in github.comments(GH_REPO, issue["number"])[-1]["body"]


def test_local_mode_records_only_the_checks(repo, aws, make_executor, env, github):
    [unit] = applied_units(repo, aws, make_executor, 1)
    repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=3)}, "merged, never applied")
    github.clear_log()
    _, checks = run_drift(dg.DagsterInstance.ephemeral())
    [check] = checks.values()
    assert not check.passed and check.metadata["plan"].value == "1 to add, 0 to change, 0 to destroy"
    assert check.metadata["commit"].value == repo.git("rev-parse", "HEAD")
    assert github.log == []  # no GitHub request at all


def test_every_unit_has_one_drift_check_in_definitions_of_bounded_size(monkeypatch):
    """Dagster's asset job takes time quadratic in a check definition's size (38 s at 10,000 units in one): the
    checks are defined per account, in slices."""
    from pipelines_dagster.core.lineage import AccountNode, Lineage, UnitNode
    from pipelines_dagster.defs import drift

    monkeypatch.setattr(drift, "CHECKS_PER_OP", 3)
    units = [UnitNode(path=f"dev/u{i}", kind="terraform", engine="terraform", account="dev") for i in range(7)]
    units += [UnitNode(path="prod/app", kind="terraform", engine="terraform", account="prod"),
              UnitNode(path="shared/x", kind="terraform", engine="terraform", account=None)]
    lineage = Lineage(accounts=[AccountNode(name="dev", id="1"), AccountNode(name="prod", id="2")], units=units)
    checks = drift.make_drift_definitions(lineage).asset_checks
    sizes = {c.node_def.name: len(list(c.check_keys)) for c in checks}
    assert sizes == {"drift_checks_dev": 3, "drift_checks_dev_2": 3, "drift_checks_dev_3": 1,
                     "drift_checks_no_account": 1, "drift_checks_prod": 1}
    keys = [k for c in checks for k in c.check_keys]
    assert sorted(k.asset_key.to_user_string() for k in keys) == sorted(f"units/{u.path}" for u in units)
