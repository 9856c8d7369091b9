"""Starting a run grants nothing a push to the deploy branch would not give: run configuration cannot change a
resource, and a push run applies only the deploy branch's own history. Each attack is launched as the Launchpad,
GraphQL or `dagster job execute -c` would launch it (run config, tags), with real git, Terraform, the AWS emulator,
Dagster and the GitHub fake."""

import os
import subprocess
import sys

import dagster as dg
import pytest
import yaml

from pipelines_dagster.core import run_requests
from pipelines_dagster.core.lineage import AccountNode, Lineage, UnitNode
from pipelines_dagster.core.model import Status
from pipelines_dagster.definitions import build_definitions
from pipelines_dagster.defs.drift import JOB_NAME as DRIFT_JOB
from pipelines_dagster.defs.jobs import APPLY_JOB, PLAN_JOB
from pipelines_dagster.settings import Settings
from tests.conftest import ACCOUNTS, null_unit
from tests.defs.conftest import GH_REPO
from tests.defs.jobs import launch
from tests.defs.test_job import env  # noqa: F401 (a fixture)

ATTACKS = [  # what issue 18 found settable at launch, by the resource names of then and of now
    ("infra_repo", {"deploy_branch": "evil"}),
    ("infra_repo", {"deploy_branch_override": "evil"}),
    ("aws_dev", {"endpoint_url": "http://127.0.0.1:9/steal-the-oidc-token"}),
    ("github", {"api_url": "http://127.0.0.1:9/steal-the-github-token"}),
    ("engine", {"unit_user": "root"}),
    ("changes", {"engine": {"unit_user": "root"}}),
    ("engine", {"unit_env": ["*"]}),
    ("changes", {"ui_url": "https://evil.example"}),
    ("io_manager", {"s3_bucket": "evil-bucket"}),
]


def failure(run) -> str:
    [event] = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    assert event.step_key == "orchestrate"
    return event.event_specific_data.error.message


def started_steps(run) -> set[str]:
    return {e.step_key for e in run.all_events if e.event_type_value == "STEP_START"}


def definitions() -> dg.Definitions:
    lineage = Lineage(location=".", deploy_branch="main", commit="0" * 40, accounts=[AccountNode(
        "dev", ACCOUNTS["dev"], plan_role_arn="arn:aws:iam::111111111111:role/pipelines-plan",
        apply_role_arn="arn:aws:iam::111111111111:role/pipelines-apply")],
        units=[UnitNode("dev/app", "terraform", "terraform", "dev")])
    return build_definitions(Settings.from_env({}), lineage)


@pytest.mark.parametrize("resource, config", ATTACKS, ids=[f"{r}.{next(iter(c))}" for r, c in ATTACKS])
def test_run_config_cannot_reconfigure_a_resource(repo, env, resource, config):  # noqa: F811
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        launch(repo, env, {"pr_number": 1}, instance=instance,
               run_config={"resources": {resource: {"config": config}}})
    entry = next(iter(config)) if resource in definitions().resources else resource
    assert f'unexpected config entry "{entry}"' in str(refused.value)
    assert instance.get_runs() == []  # refused before a run exists: nothing ran, no credentials were asked for


def test_no_job_lets_a_launcher_configure_a_resource():
    defs = definitions()
    for job_name in (PLAN_JOB, APPLY_JOB, DRIFT_JOB):
        job = defs.resolve_job_def(job_name)
        resources = job.run_config_schema.config_type.fields["resources"].config_type.fields
        assert {"infra_repo", "github", "changes", "aws_dev", "io_manager"} <= set(resources)
        for name, field in resources.items():
            assert not field.config_type.fields["config"].config_type.fields, name  # nothing a launcher may set
        with pytest.raises(dg.DagsterInvalidConfigError, match='unexpected config entry "api_url"'):
            dg.validate_run_config(job, {"resources": {"github": {"config": {"api_url": "http://evil"}}}})
    assert "Set by the deployment" in defs.resources["aws_dev"].description
    assert "arn:aws:iam::111111111111:role/pipelines-apply" in defs.resources["aws_dev"].description


def test_dagster_job_execute_refuses_a_run_config_that_sets_a_resource(tmp_path):
    config = tmp_path / "attack.yaml"
    config.write_text(yaml.safe_dump({
        "ops": {"orchestrate": {"config": {"pr_number": 1}}},
        "resources": {"github": {"config": {"api_url": "http://127.0.0.1:9"}},
                      "changes": {"config": {"unit_user": "root"}}}}))
    home = tmp_path / "home"
    home.mkdir()
    environment = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINES_REPO_URL": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-m", "pipelines_dagster.definitions",
                           "-j", PLAN_JOB, "-c", str(config)], capture_output=True, text=True, env=environment,
                          timeout=120)
    assert proc.returncode != 0
    assert 'unexpected config entry "api_url"' in proc.stderr and 'unexpected config entry "unit_user"' in proc.stderr
    assert not (home / "history").exists() or dg.DagsterInstance.from_config(str(home)).get_runs() == []


# ------------------------------------------------------------------------------------------ push runs


def side_branch(repo, aws, unit: str) -> str:
    """A branch off main adding `unit` (code the deploy branch never held), main checked out again."""
    repo.git("checkout", "-q", "-b", "side")
    sha = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)}, "side")
    repo.git("checkout", "-q", "main")
    return sha


def test_a_push_run_with_a_base_off_the_deploy_branch_is_refused(repo, aws, env):  # noqa: F811
    side = side_branch(repo, aws, "dev/sideonly")
    head = repo.commit({"dev/ok/main.tf": null_unit(aws.endpoint, "dev/ok")})
    # before: a destroy of dev/sideonly, checked out at the side branch, with dev's apply role
    run = launch(repo, env, {"event": "push", "head_ref": head, "base_ref": side})
    assert not run.success and started_steps(run) == {"orchestrate"}
    assert f"base {side[:12]} is not on the deploy branch main" in failure(run)
    assert aws.state(ACCOUNTS["dev"], "dev/ok/terraform.tfstate") is None


def test_a_push_run_from_a_rewritten_deploy_branchs_old_tip_is_refused(repo, aws, env):  # noqa: F811
    fork = repo.git("rev-parse", "HEAD")
    old_tip = repo.commit({"dev/gone/main.tf": null_unit(aws.endpoint, "dev/gone")}, "later dropped")
    repo.git("reset", "-q", "--hard", fork)
    head = repo.commit({"dev/kept/main.tf": null_unit(aws.endpoint, "dev/kept")}, "the rewritten history")
    run = launch(repo, env, {"event": "push", "head_ref": head, "base_ref": old_tip})
    assert not run.success and started_steps(run) == {"orchestrate"}
    assert f"base {old_tip[:12]} is not on the deploy branch main" in failure(run)


def test_a_push_applies_neither_a_merged_branchs_own_commits_nor_a_base_after_its_head(repo, aws, env):  # noqa: F811
    feature = side_branch(repo, aws, "dev/feature")
    before = repo.git("rev-parse", "HEAD")
    repo.git("merge", "-q", "--no-ff", "side", "-m", "merge side")
    merged = launch(repo, env, {"event": "push", "head_ref": feature})  # reachable from main, never its tip
    assert not merged.success and started_steps(merged) == {"orchestrate"}
    assert f"{feature[:12]} is not on the deploy branch main" in failure(merged)
    after = repo.git("rev-parse", "HEAD")
    backwards = launch(repo, env, {"event": "push", "head_ref": before, "base_ref": after})
    assert not backwards.success and f"base {after[:12]} comes after head {before[:12]}" in failure(backwards)
    assert aws.state(ACCOUNTS["dev"], "dev/feature/terraform.tfstate") is None


def test_a_push_from_an_earlier_deploy_branch_commit_applies_the_range(repo, aws, env):  # noqa: F811
    base = repo.git("rev-parse", "HEAD")
    repo.commit({"dev/r1/main.tf": null_unit(aws.endpoint, "dev/r1")})
    head = repo.commit({"dev/r2/main.tf": null_unit(aws.endpoint, "dev/r2")})
    run = launch(repo, env, {"event": "push", "head_ref": head, "base_ref": base})
    assert run.success, run.outcomes
    assert {u: o.status.value for u, o in run.by_unit().items()} == {"dev/r1": "succeeded", "dev/r2": "succeeded"}


def test_after_a_rewrite_of_the_deploy_branch_nothing_of_the_dropped_commits_is_applied_and_it_is_reported(
        repo, aws, env, github):  # noqa: F811
    fork = repo.git("rev-parse", "HEAD")
    old_tip = repo.commit({"dev/dropped/main.tf": null_unit(aws.endpoint, "dev/dropped")}, "later dropped")
    repo.git("reset", "-q", "--hard", fork)
    head = repo.commit({"dev/new/main.tf": null_unit(aws.endpoint, "dev/new")}, "the rewritten history")
    # what the deploy-branch sensor asks for after the rewrite (tests/defs/test_sensors.py)
    run = launch(repo, env, {"event": "push", "head_ref": head, "base_ref": fork}, github_repo=GH_REPO,
                 tags={run_requests.TAG_REPLACED_TIP: old_tip})
    assert not run.success
    assert {u: o.status.value for u, o in run.by_unit().items()} == {"dev/new": "succeeded"}
    assert aws.state(ACCOUNTS["dev"], "dev/dropped/terraform.tfstate") is None
    [report_failure] = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    message = report_failure.event_specific_data.error.message
    assert report_failure.step_key == "report"
    assert f"{old_tip[:12]} is no longer in its history, which now ends at {head[:12]}" in message
    [issue] = github.issues(GH_REPO)
    assert old_tip[:12] in issue["title"] and head[:12] in issue["title"] and "rewritten" in issue["body"]

    # the tag believed only when that commit is indeed gone from the branch: a launcher's lie changes nothing
    honest = launch(repo, env, {"event": "push", "head_ref": head, "base_ref": fork},
                    tags={run_requests.TAG_REPLACED_TIP: fork})
    assert honest.success and "rewritten" not in honest.report()


def test_a_materialization_reported_by_hand_is_no_record_of_an_apply(repo, aws, env):  # noqa: F811
    """The UI and the API report materializations without a run: one must neither block the next apply (a later
    commit named) nor allow a rollback (an older one named)."""
    instance = dg.DagsterInstance.ephemeral()
    unit = "dev/recorded"
    key = dg.AssetKey(["units", "dev", "recorded"])
    c0 = repo.git("rev-parse", "HEAD")
    c1 = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, trigger="v1")})
    c2 = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, trigger="v2")})
    assert launch(repo, env, {"event": "push", "head_ref": c1, "base_ref": c0}, instance=instance).success
    assert launch(repo, env, {"event": "push", "head_ref": c2, "base_ref": c1}, instance=instance).success

    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={"commit": c1}))
    rollback = launch(repo, env, {"event": "push", "head_ref": c1, "base_ref": c0}, instance=instance)
    assert rollback.by_unit()[unit].status is Status.REFUSED and not rollback.success  # refused, and it says so

    repo.git("checkout", "-q", "-b", "later")
    later = repo.commit({"README.md": "not merged\n"})
    repo.git("checkout", "-q", "main")
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={"commit": later}))
    c3 = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, trigger="v3")})
    applied = launch(repo, env, {"event": "push", "head_ref": c3, "base_ref": c2}, instance=instance)
    assert applied.success and applied.by_unit()[unit].status is Status.SUCCEEDED


def test_with_github_a_plan_is_of_a_pull_requests_own_head_and_base_or_of_a_branch(repo, aws, env, github):  # noqa: F811
    """A fork's commit planned by its sha, its pull request ref, or under another pull request's number; a green
    status faked by a base equal to the head: each refused before anything runs or is written."""
    repo.git("checkout", "-q", "-b", "ours")
    ours_head = repo.commit({"dev/ours/main.tf": null_unit(aws.endpoint, "dev/ours")})
    repo.git("checkout", "-q", "-b", "theirs", "main")
    fork_head = repo.commit({"dev/theirs/main.tf": null_unit(aws.endpoint, "dev/theirs")})
    repo.git("checkout", "-q", "main")
    github.add_repo("mallory/infrastructure-live", fork_of=GH_REPO)
    ours = github.add_pull_request(GH_REPO, "ours", head_sha=ours_head)
    fork = github.add_pull_request(GH_REPO, "theirs", head_repo="mallory/infrastructure-live", head_sha=fork_head)
    repo.git("update-ref", f"refs/pull/{fork}/head", fork_head)
    github.clear_log()
    for config in ({"head_ref": fork_head}, {"head_ref": f"refs/pull/{fork}/head"}, {"head_ref": f"pull/{fork}/head"},
                   {"pr_number": ours, "head_ref": fork_head}, {"pr_number": ours, "base_ref": ours_head},
                   {"head_ref": "ours", "base_ref": "ours"}):
        run = launch(repo, env, config, github_repo=GH_REPO)
        assert not run.success and started_steps(run) == {"orchestrate"}, config
        assert "cannot start" in failure(run), config
    assert github.writes() == []
    planned = launch(repo, env, {"pr_number": ours}, github_repo=GH_REPO)  # what is allowed still is
    assert planned.success and [o.change.unit for o in planned.outcomes] == ["dev/ours"]
    branch = launch(repo, env, {"head_ref": "ours"}, github_repo=GH_REPO)
    assert branch.success and [o.change.unit for o in branch.outcomes] == ["dev/ours"]


def test_a_plan_run_tagged_with_the_apply_lock_fails_at_once(repo, env):  # noqa: F811
    """The run queue holds a repository's applies behind any run carrying its apply-lock tag."""
    run = launch(repo, env, {"head_ref": "main"}, tags={run_requests.TAG_APPLY_LOCK: "anything"})
    assert not run.success and "a plan carries no pipelines/apply-lock tag" in failure(run)


def test_a_reexecution_runs_only_what_its_own_job_produced(repo, aws, env):  # noqa: F811
    """Re-executing a plan run's steps under the apply job (GraphQL lets a launcher name any job and any parent)
    runs nothing: on Kubernetes the apply job's pods hold the apply identity."""
    instance = dg.DagsterInstance.ephemeral()
    repo.git("checkout", "-q", "-b", "pr-code")
    repo.commit({"dev/prcode/main.tf": null_unit(aws.endpoint, "dev/prcode")})
    repo.git("checkout", "-q", "main")
    plan = launch(repo, env, {"head_ref": "pr-code"}, instance=instance)
    assert plan.success
    [step] = [e.step_key for e in plan.all_events if e.event_type_value == "STEP_SUCCESS"
              and e.step_key.startswith("plan[")]
    crossed = dg.ReexecutionOptions(parent_run_id=plan.run_id,
                                    step_selection=[step.replace("plan[", "apply_wave_0[")])
    run = launch(repo, env, None, instance=instance, reexecution=crossed, event="push")  # Dagster lets it start
    [refused] = run.failures()
    assert refused.step_key == step.replace("plan[", "apply_wave_0[")
    message = refused.event_specific_data.error.message
    assert f"comes from run {plan.run_id} of infrastructure_plan, not of infrastructure_apply" in message
    assert [e for e in run.all_events if e.event_type_value == "STEP_OUTPUT"] == []  # nothing ran
    assert aws.state(ACCOUNTS["dev"], "dev/prcode/terraform.tfstate") is None
