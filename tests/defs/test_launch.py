"""Launching the job by hand, as from the Launchpad: a pull request by its number alone (GitHub, or in local mode
the remote's refs/pull/N/head), a push by its deploy-branch commit alone, bad input named, runs tagged for the
Runs page. Real git, Terraform, the AWS emulator, Dagster and the GitHub fake."""

import uuid

import dagster as dg
import pytest

from pipelines_dagster.core import run_requests
from pipelines_dagster.core.lineage import Lineage
from pipelines_dagster.definitions import build_definitions
from pipelines_dagster.defs.jobs import APPLY_JOB, PLAN_JOB
from pipelines_dagster.settings import Settings
from tests.conftest import null_unit
from tests.defs.conftest import GH_REPO
from tests.defs.jobs import launch
from tests.defs.test_job import env  # noqa: F401 (a fixture)


def feature_branch(repo, aws, unit: str) -> tuple[str, str]:
    """A branch adding `unit`, forked from main, and main moving on after the fork: (fork point, head)."""
    fork_point = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    repo.git("checkout", "-q", "main")
    repo.commit({"prod/theirs/main.tf": null_unit(aws.endpoint, "prod/theirs")}, "main moves on")
    return fork_point, head


def stored_tags(instance, run) -> dict:
    return instance.get_run_by_id(run.run_id).tags


def failure(run) -> str:
    [event] = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    assert event.step_key == "orchestrate"
    return event.event_specific_data.error.message


def test_a_pull_request_number_alone_is_looked_up_on_github(repo, aws, env, github):  # noqa: F811
    fork_point, head = feature_branch(repo, aws, "dev/mine")
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    instance = dg.DagsterInstance.ephemeral()
    run = launch(repo, env, {"pr_number": number}, github_repo=GH_REPO, instance=instance)
    assert run.success, run.outcomes
    assert [(o.change.unit, o.change.action.value) for o in run.outcomes] == [("dev/mine", "plan")]  # from the fork
    assert run.progress.plan.spec.base == fork_point and run.progress.plan.spec.head == head
    [comment] = github.comments(GH_REPO, number)
    assert "`dev/mine`" in comment["body"] and head[:12] in comment["body"]
    assert [s["state"] for s in github.statuses(GH_REPO, head)] == ["pending", "success"]
    run_tags = stored_tags(instance, run)
    keys = (run_requests.TAG_PR, run_requests.TAG_SHA, run_requests.TAG_EVENT, "pipelines/account-dev")
    assert {k: run_tags[k] for k in keys} == {
        run_requests.TAG_PR: str(number), run_requests.TAG_SHA: head, run_requests.TAG_EVENT: "pull_request",
        "pipelines/account-dev": "true"}
    assert "pipelines/account-prod" not in run_tags

    assert github.count("GET", rf".*/pulls/{number}$") == 1  # looked up once: refs and the fork check

    missing = launch(repo, env, {"pr_number": 999}, github_repo=GH_REPO)
    assert not missing.success and "pull request #999" in failure(missing) and "Not Found" in failure(missing)


def test_a_pull_request_that_cannot_be_read_gets_no_run_even_with_its_refs_given(repo, aws, env, github):  # noqa: F811
    """Whether a pull request comes from a fork decides its credentials: unread, nothing runs (fail closed)."""
    fork_point, head = feature_branch(repo, aws, "dev/unread")
    run = launch(repo, env, {"pr_number": 4242, "base_ref": fork_point, "head_ref": head}, github_repo=GH_REPO)
    assert not run.success and run.outcomes == []
    assert "cannot start: pull request #4242" in failure(run) and "Not Found" in failure(run)
    steps = {e.step_key for e in run.all_events if e.event_type_value == "STEP_START"}
    assert steps == {"orchestrate"}  # no plan step: no credentials were asked for


def test_in_local_mode_a_pull_request_number_is_the_remotes_pull_request_ref(repo, aws, env):  # noqa: F811
    fork_point, head = feature_branch(repo, aws, "prod/mine")
    repo.git("update-ref", "refs/pull/7/head", head)  # what GitHub (and the demo's walk-through) serve
    instance = dg.DagsterInstance.ephemeral()
    run = launch(repo, env, {"pr_number": 7}, instance=instance)
    assert run.success, run.outcomes
    assert [o.change.unit for o in run.outcomes] == ["prod/mine"]
    assert run.progress.plan.spec.base == fork_point
    assert "`prod/mine`" in run.report()
    run_tags = stored_tags(instance, run)
    assert (run_tags[run_requests.TAG_PR], run_tags[run_requests.TAG_SHA], run_tags["pipelines/account-prod"]) == (
        "7", head, "true")

    branch = launch(repo, env, {"head_ref": "feature"})  # a branch alone: against the deploy branch
    assert branch.success and [o.change.unit for o in branch.outcomes] == ["prod/mine"]

    unknown = launch(repo, env, {"pr_number": 8})
    assert not unknown.success
    assert "pull request #8: refs/pull/8/head is not in the repository" in failure(unknown)
    assert "give head_ref" in failure(unknown)


def test_a_push_is_launched_by_its_deploy_branch_commit_alone(repo, aws, env):  # noqa: F811
    first, second = (f"dev/{name}-{uuid.uuid4().hex[:6]}" for name in ("first", "second"))  # state is shared
    repo.commit({f"{first}/main.tf": null_unit(aws.endpoint, first)})
    head = repo.commit({f"{second}/main.tf": null_unit(aws.endpoint, second)})
    instance = dg.DagsterInstance.ephemeral()
    run = launch(repo, env, {"event": "push", "head_ref": head}, instance=instance)
    assert run.success, run.outcomes
    assert [(o.change.unit, o.status.value) for o in run.outcomes] == [(second, "succeeded")]  # from ^1
    assert aws.state("111111111111", f"{first}/terraform.tfstate") is None
    assert aws.state("111111111111", f"{second}/terraform.tfstate") is not None
    run_tags = stored_tags(instance, run)
    assert (run_tags[run_requests.TAG_EVENT], run_tags[run_requests.TAG_SHA], run_tags["pipelines/account-dev"]) == (
        "push", head, "true")
    assert run_requests.TAG_APPLY_LOCK in run_tags  # a push launched by hand takes the apply lock

    repo.git("checkout", "-q", "-b", "side")
    side = repo.commit({"dev/side/main.tf": null_unit(aws.endpoint, "dev/side")})
    refused = launch(repo, env, {"event": "push", "head_ref": "side"})
    assert not refused.success
    assert f"side ({side[:12]}) is not on the deploy branch main: a push applies deploy-branch commits only" in \
        failure(refused)
    assert aws.state("111111111111", "dev/side/terraform.tfstate") is None


@pytest.mark.parametrize("config, problem", [
    ({}, "nothing to run: give pr_number (a pull request), or head_ref (a branch or commit)"),
    ({"pr_number": 0}, "pr_number 0: a pull request number is 1 or more"),
    ({"head_ref": "no-such-branch"}, "cannot start: unknown ref 'no-such-branch'"),
])
def test_bad_input_is_named_before_anything_runs(repo, env, config, problem):  # noqa: F811
    run = launch(repo, env, config)
    assert not run.success and problem in failure(run) and run.progress is None


def test_each_jobs_launchpad_takes_what_it_can_do_and_describes_every_field():
    defs = build_definitions(Settings.from_env({}), Lineage())
    plan, apply = defs.resolve_job_def(PLAN_JOB), defs.resolve_job_def(APPLY_JOB)
    dg.validate_run_config(plan, {"ops": {"orchestrate": {"config": {"pr_number": 12}}}})  # enough
    with pytest.raises(dg.DagsterInvalidConfigError, match='unexpected config entry "pr_number"'):
        dg.validate_run_config(apply, {"ops": {"orchestrate": {"config": {"head_ref": "main", "pr_number": 3}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match='Missing required config entry "head_ref"'):
        dg.validate_run_config(apply, {"ops": {"orchestrate": {"config": {}}}})
    for job, names in ((plan, {"pr_number", "head_ref", "base_ref"}), (apply, {"head_ref", "base_ref"})):
        ops = job.run_config_schema.config_type.fields["ops"].config_type
        fields = ops.fields["orchestrate"].config_type.fields["config"].config_type.fields
        assert set(fields) == names
        assert all(len(field.description or "") > 40 for field in fields.values()), {
            name: field.description for name, field in fields.items()}
