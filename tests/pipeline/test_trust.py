"""Attacks on the job by someone who can push branches, run for real (git, Terraform, the AWS emulator, Dagster)."""

from pipelines_dagster.defs.pipeline import report_markdown
from tests.conftest import ACCOUNTS, null_unit
from tests.pipeline.test_job import env, run_job, units  # noqa: F401 (env is a fixture)


def test_a_pull_request_cannot_choose_its_deploy_branch_roles_or_engine(repo, aws, env):  # noqa: F811
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "evil")
    repo.commit({".pipelines.yml": "deploy_branch: evil\nroles: {plan: pipelines-apply, apply: pipelines-apply}\n"
                                   "engine: {terraform: tofu}\n",
                 "dev/steal/main.tf": null_unit(aws.endpoint, "dev/steal")})
    result, summary = run_job(repo, env, "pull_request", base, "evil")
    outcome = units(summary)["dev/steal"]
    assert result.success, summary
    assert outcome["status"] == "succeeded", outcome["message"]  # terraform ran, not tofu (not installed here)
    assert outcome["role_arn"] == f"arn:aws:iam::{ACCOUNTS['dev']}:role/pipelines-plan"
    assert outcome["engine"] == "terraform"
    report = report_markdown(result)
    assert "changes .pipelines.yml: pipeline configuration takes effect after merge" in report


def test_a_tag_named_like_the_deploy_branch_is_never_applied(repo, aws, env):  # noqa: F811
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "side")
    evil = repo.commit({"dev/tagged/main.tf": null_unit(aws.endpoint, "dev/tagged")})
    repo.git("tag", "main", evil)
    repo.git("checkout", "-q", "main")
    repo.commit({"dev/merged/main.tf": null_unit(aws.endpoint, "dev/merged")})
    result, summary = run_job(repo, env, "push", base, "main")
    assert result.success, summary
    assert set(units(summary)) == {"dev/merged"}
    assert aws.state(ACCOUNTS["dev"], "dev/tagged/terraform.tfstate") is None


def test_an_older_commit_is_never_applied_over_a_newer_one(repo, aws, env):  # noqa: F811
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    c0 = repo.git("rev-parse", "HEAD")
    c1 = repo.commit({"dev/order/main.tf": null_unit(aws.endpoint, "dev/order", trigger="old")})
    c2 = repo.commit({"dev/order/main.tf": null_unit(aws.endpoint, "dev/order", trigger="new")})
    first, _ = run_job(repo, env, "push", c0, c1, instance=instance)
    second, _ = run_job(repo, env, "push", c1, c2, instance=instance)
    assert first.success and second.success
    # the first run retried, or launched again from the Launchpad, after the second one applied
    again, summary = run_job(repo, env, "push", c0, c1, instance=instance)
    outcome = units(summary)["dev/order"]
    assert outcome["status"] == "skipped"
    assert f"already applied at {c2[:12]}" in outcome["message"] and c1[:12] in outcome["message"]
    assert "already applied at" in report_markdown(again)
    state = aws.state(ACCOUNTS["dev"], "dev/order/terraform.tfstate")
    triggers = {i["attributes"]["triggers"]["version"] for r in state["resources"] for i in r["instances"]}
    assert triggers == {"new"}
    # the newest commit itself may run again (a retry of the latest apply)
    latest, summary = run_job(repo, env, "push", c1, c2, instance=instance)
    assert units(summary)["dev/order"]["status"] == "no_changes"
