"""Attacks on the job by someone who can push branches, run for real (git, Terraform, the AWS emulator, Dagster)."""

import dagster as dg

from pipelines_dagster.core.model import Status
from tests.conftest import ACCOUNTS, null_unit
from tests.defs.jobs import run_job
from tests.defs.test_job import env  # noqa: F401 (a fixture)


def test_a_pull_request_cannot_choose_its_deploy_branch_roles_or_engine(repo, aws, env):  # noqa: F811
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "evil")
    repo.commit({".pipelines.yml": "deploy_branch: evil\nroles: {plan: pipelines-apply, apply: pipelines-apply}\n"
                                   "engine: {terraform: tofu}\n",
                 "dev/steal/main.tf": null_unit(aws.endpoint, "dev/steal")})
    run = run_job(repo, env, "pull_request", base, "evil")
    outcome = run.by_unit()["dev/steal"]
    assert run.success, run.outcomes
    assert outcome.status is Status.SUCCEEDED, outcome.message  # terraform ran, not tofu (not installed here)
    assert outcome.role_arn == f"arn:aws:iam::{ACCOUNTS['dev']}:role/pipelines-plan"
    assert outcome.engine == "terraform"
    assert "changes .pipelines.yml: pipeline configuration takes effect after merge" in run.report()


def test_a_tag_named_like_the_deploy_branch_is_never_applied(repo, aws, env):  # noqa: F811
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "side")
    evil = repo.commit({"dev/tagged/main.tf": null_unit(aws.endpoint, "dev/tagged")})
    repo.git("tag", "main", evil)
    repo.git("checkout", "-q", "main")
    repo.commit({"dev/merged/main.tf": null_unit(aws.endpoint, "dev/merged")})
    run = run_job(repo, env, "push", base, "main")
    assert run.success, run.outcomes
    assert set(run.by_unit()) == {"dev/merged"}
    assert aws.state(ACCOUNTS["dev"], "dev/tagged/terraform.tfstate") is None


def test_an_older_commit_is_never_applied_over_a_newer_one(repo, aws, env):  # noqa: F811
    instance = dg.DagsterInstance.ephemeral()
    c0 = repo.git("rev-parse", "HEAD")
    c1 = repo.commit({"dev/order/main.tf": null_unit(aws.endpoint, "dev/order", trigger="old")})
    c2 = repo.commit({"dev/order/main.tf": null_unit(aws.endpoint, "dev/order", trigger="new")})
    first = run_job(repo, env, "push", c0, c1, instance=instance)
    second = run_job(repo, env, "push", c1, c2, instance=instance)
    assert first.success and second.success
    # the first run retried, or launched again from the Launchpad, after the second one applied
    again = run_job(repo, env, "push", c0, c1, instance=instance)
    outcome = again.by_unit()["dev/order"]
    assert outcome.status is Status.REFUSED
    assert f"already applied at {c2[:12]}" in outcome.message and c1[:12] in outcome.message
    assert "⛔ refused" in again.report() and "already applied at" in again.report()
    state = aws.state(ACCOUNTS["dev"], "dev/order/terraform.tfstate")
    triggers = {i["attributes"]["triggers"]["version"] for r in state["resources"] for i in r["instances"]}
    assert triggers == {"new"}
    # the newest commit itself may run again (a retry of the latest apply)
    latest = run_job(repo, env, "push", c1, c2, instance=instance)
    assert latest.by_unit()["dev/order"].status is Status.NO_CHANGES
