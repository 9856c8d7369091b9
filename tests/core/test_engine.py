"""The executor running real Terraform 1.0.3 against an s3 backend on the AWS emulator, with OIDC credentials."""

import dataclasses
import json
import os
import time
import uuid
from pathlib import Path

from pipelines_dagster.core.executor import ExecuteRequest
from pipelines_dagster.core.model import Action, Event, Status
from tests.conftest import ACCOUNTS, env_file, null_unit

DEV = ACCOUNTS["dev"]


def request(unit: str, action: str, head: str, base: str | None = None, event: str | None = None,
            pr: int | None = None) -> ExecuteRequest:
    action = Action(action)
    if event is None:
        event = "push" if action in (Action.APPLY, Action.DESTROY) else "pull_request"
    return ExecuteRequest(unit=unit, action=action, event=Event(event), head=head, base=base, pr=pr)


def test_plan_reports_counts_addresses_and_output_changes(repo, aws, make_executor, settings):
    unit = f"dev/app-{uuid.uuid4().hex[:6]}"  # the emulator's state is shared: a unit of its own
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=3)})

    result = make_executor().execute(request(unit, "plan", head, pr=7))

    assert result.status is Status.SUCCEEDED, result.message + result.output
    assert (result.summary.add, result.summary.change, result.summary.destroy) == (3, 0, 0)
    assert [r.address for r in result.summary.resources] == [f"null_resource.item[{i}]" for i in range(3)]
    assert {r.action for r in result.summary.resources} == {"create"}
    assert result.summary.to_dict()["outputs"] == [{"name": "items", "action": "create", "actions": ["create"]}]
    assert result.exit_code == 0 and result.engine == "terraform" and result.commit == head
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in result.output
    assert result.role_arn == f"arn:aws:iam::{DEV}:role/pipelines-plan" and result.account == "dev"
    # a plan writes no state, and the private working copy is gone
    assert aws.state(DEV, f"{unit}/terraform.tfstate") is None
    assert list(Path(settings.work_dir).iterdir()) == []


def test_apply_then_replan_has_no_changes_and_a_trigger_change_is_a_replacement(repo, aws, make_executor):
    unit = f"dev/apply-{uuid.uuid4().hex[:6]}"
    first = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=2)})
    executor = make_executor()

    applied = executor.execute(request(unit, "apply", first))
    assert applied.status is Status.SUCCEEDED, applied.message + applied.output
    assert (applied.summary.add, applied.summary.destroy) == (2, 0)
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in applied.output
    state = aws.state(DEV, f"{unit}/terraform.tfstate")
    assert len(state["resources"][0]["instances"]) == 2

    replanned = executor.execute(request(unit, "plan", first))
    assert replanned.status is Status.NO_CHANGES, replanned.message + replanned.output
    assert replanned.summary.to_dict()["resources"] == [] and replanned.ok

    second = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=2, trigger="v2")})
    changed = executor.execute(request(unit, "plan", second))
    assert changed.status is Status.SUCCEEDED
    assert (changed.summary.add, changed.summary.change, changed.summary.destroy) == (2, 0, 2)
    assert {r.action for r in changed.summary.resources} == {"replace"}
    assert {r.reason for r in changed.summary.resources} == {"forces replacement: triggers"}  # Terraform's why


def test_detailed_exitcode_is_2_with_a_diff_0_without_and_errors_still_fail(repo, aws, make_executor, settings):
    unit = f"dev/exit-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1)})
    executor = make_executor(settings=dataclasses.replace(settings, detailed_exitcode=True))

    diff = executor.execute(request(unit, "plan", head))
    assert (diff.status, diff.exit_code, diff.summary.add) == (Status.SUCCEEDED, 2, 1), diff.message + diff.output
    assert "-detailed-exitcode" in diff.output
    applied = executor.execute(request(unit, "apply", head))  # the plan's 2 is no failure
    assert (applied.status, applied.exit_code) == (Status.SUCCEEDED, 0), applied.message
    clean = executor.execute(request(unit, "plan", head))
    assert (clean.status, clean.exit_code) == (Status.NO_CHANGES, 0)
    broken = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, extra='resource "nope" "x" {}\n')})
    failed = executor.execute(request(unit, "plan", broken))
    assert (failed.status, failed.exit_code) == (Status.FAILED, 1)


def test_deleted_unit_is_planned_and_destroyed_from_the_base_commit(repo, aws, make_executor):
    unit = f"dev/gone-{uuid.uuid4().hex[:6]}"
    base = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=2)})
    executor = make_executor()
    assert executor.execute(request(unit, "apply", base)).status is Status.SUCCEEDED
    head = repo.commit({unit: None}, "delete the unit")

    plan = executor.execute(request(unit, "plan-destroy", head, base))
    assert plan.status is Status.SUCCEEDED, plan.message + plan.output
    assert plan.commit == base and plan.role_arn.endswith(":role/pipelines-plan")
    assert (plan.summary.add, plan.summary.change, plan.summary.destroy) == (0, 0, 2)
    assert {r.action for r in plan.summary.resources} == {"delete"}
    assert len(aws.state(DEV, f"{unit}/terraform.tfstate")["resources"][0]["instances"]) == 2  # plan only

    destroyed = executor.execute(request(unit, "destroy", head, base))
    assert destroyed.status is Status.SUCCEEDED, destroyed.message + destroyed.output
    assert destroyed.summary.destroy == 2 and destroyed.role_arn.endswith(":role/pipelines-apply")
    assert "Resources: 0 added, 0 changed, 2 destroyed." in destroyed.output
    assert aws.state(DEV, f"{unit}/terraform.tfstate")["resources"] == []

    # from the head commit the unit does not exist: the executor says so instead of running anything
    missing = executor.execute(request(unit, "plan", head))
    assert missing.status is Status.FAILED and "does not exist" in missing.message


def test_broken_terraform_fails_with_terraforms_message(repo, aws, make_executor):
    unit = "dev/broken"
    extra = 'resource "null_resource" "bad" {\n  triggers = { v = var.not_declared }\n}\n'
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, extra=extra)})

    result = make_executor().execute(request(unit, "plan", head))

    assert result.status is Status.FAILED
    assert result.exit_code == 1
    assert "Reference to undeclared input variable" in result.message
    assert 'variable "not_declared"' in result.message or "not_declared" in result.message
    assert "Reference to undeclared input variable" in result.output


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie waiting for its reaper is dead


def test_timeout_stops_the_whole_process_group(repo, aws, make_executor, settings, drop_box):
    pid_file = drop_box / "sleeper.pid"
    # a foreground sleep, and a background one that ignores SIGTERM: only killing the whole group stops it
    extra = f'''resource "null_resource" "slow" {{
  provisioner "local-exec" {{
    command = "(trap '' TERM; exec sleep 120) >/dev/null 2>&1 & echo $! $$ > {pid_file}; exec sleep 120"
  }}
}}
'''
    unit = f"dev/slow-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=0, extra=extra)})
    settings.action_timeout_s = 12
    settings.apply_grace_s = 60  # an apply gets SIGTERM at the deadline, and stops on it by itself
    started = time.monotonic()

    result = make_executor(settings=settings).execute(request(unit, "apply", head))

    elapsed = time.monotonic() - started
    assert result.status is Status.TIMED_OUT, result.message + result.output
    assert result.exit_code == 124 and "timed out after 12s" in result.message
    assert elapsed < 12 + 10
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "the provisioner's processes outlived the timeout"


def test_credentials_reach_the_child_only_and_secrets_are_redacted(repo, aws, make_executor, monkeypatch, drop_box):
    ambient_key = "AKIAAMBIENTEXAMPLE12"
    github_token = "ghp_" + "a1B2c3D4e5" * 4
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ambient_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ambient-secret-value-not-for-units")
    monkeypatch.setenv("GITHUB_TOKEN", github_token)
    environ_before = dict(os.environ)
    env_dump = drop_box / "child.env"
    echo = "echo secret=$AWS_SECRET_ACCESS_KEY session=$AWS_SESSION_TOKEN key=$AWS_ACCESS_KEY_ID"
    extra = f'''resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = "env > {env_dump}; echo UID=$(id -u) >> {env_dump}; {echo}"
  }}
}}
'''
    head = repo.commit({"dev/probe/main.tf": null_unit(aws.endpoint, "dev/probe", count=0, extra=extra)})

    result = make_executor().execute(request("dev/probe", "apply", head, pr=None))

    assert result.status is Status.SUCCEEDED, result.message + result.output
    child = env_file(env_dump)
    assert child["AWS_ACCESS_KEY_ID"].startswith("ASIA") and child["AWS_ACCESS_KEY_ID"] != ambient_key
    assert child["AWS_REGION"] == "us-east-1" and child["TF_IN_AUTOMATION"] == "1"
    assert "GITHUB_TOKEN" not in child and "PIPELINES_WEB_IDENTITY_TOKEN_FILE" not in child
    assert not [k for k in child if k.startswith(("PIPELINES_", "DAGSTER_"))]
    assert Path(child["HOME"]).name == "home" and Path(child["TMPDIR"]).name == "tmp"  # the run folder's
    if os.geteuid() == 0:  # root runs each unit as a uid of its own, from the default range
        assert 200000 <= int(child["UID"]) <= 299999
    assert aws.caller_arn(child) == f"arn:aws:sts::{DEV}:assumed-role/pipelines-apply/pipelines-{head[:12]}"
    # nothing of it in our own environment
    assert dict(os.environ) == environ_before
    secrets = [child["AWS_ACCESS_KEY_ID"], child["AWS_SECRET_ACCESS_KEY"], child["AWS_SESSION_TOKEN"]]
    assert not any(s in os.environ.values() for s in secrets)
    # the child printed them: the captured output and the result hold none of them
    dumped = json.dumps(result.to_dict())
    assert "secret=[REDACTED] session=[REDACTED] key=[REDACTED]" in result.output
    for secret in secrets:
        assert secret not in dumped


def test_a_unit_of_another_account_gets_that_accounts_plan_role(repo, aws, make_executor):
    # prod's state bucket exists only in prod: the plan only works with prod's credentials
    head = repo.commit({"prod/app/main.tf": null_unit(aws.endpoint, "prod/app", count=1)})

    result = make_executor().execute(request("prod/app", "plan", head, pr=12))

    assert result.status is Status.SUCCEEDED, result.message + result.output
    assert result.account == "prod" and result.role_arn == f"arn:aws:iam::{ACCOUNTS['prod']}:role/pipelines-plan"


def test_secrets_printed_by_terraform_are_redacted(repo, aws, make_executor):
    github_token = "ghp_" + "Z9y8X7w6V5" * 4
    access_key = "AKIAIOSFODNN7EXAMPLE"
    extra = f'''output "leaky" {{
  value = "token {github_token} key {access_key}"
}}
'''
    head = repo.commit({"dev/leaky/main.tf": null_unit(aws.endpoint, "dev/leaky", count=1, extra=extra)})

    result = make_executor().execute(request("dev/leaky", "plan", head))

    assert result.status is Status.SUCCEEDED, result.message + result.output
    assert "leaky" in result.output and "token [REDACTED] key [REDACTED]" in result.output
    dumped = json.dumps(result.to_dict())
    assert github_token not in dumped and access_key not in dumped


def test_terragrunt_unit_without_terragrunt_is_tool_missing(repo, aws, make_executor, settings, tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    settings.env["PATH"] = f"{empty_bin}:/usr/bin:/bin"
    head = repo.commit({"dev/tg/terragrunt.hcl": 'terraform {\n  source = "../../modules//x"\n}\n'})

    result = make_executor(settings=settings).execute(request("dev/tg", "plan", head))

    assert result.status is Status.TOOL_MISSING, result.message
    assert result.engine == "terragrunt" and "terragrunt is not installed" in result.message
    assert result.exit_code is None and not result.ok


def test_apply_role_is_refused_off_the_deploy_branch_and_apply_is_refused_for_pull_requests(repo, aws,
                                                                                             make_executor):
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({"dev/feature/main.tf": null_unit(aws.endpoint, "dev/feature", count=1)})
    executor = make_executor()

    refused = executor.execute(request("dev/feature", "apply", head))
    assert refused.status is Status.FAILED
    assert "refusing to assume the apply role" in refused.message
    assert "not on the deploy branch 'main'" in refused.message
    assert refused.role_arn is None and refused.exit_code is None

    on_pr = executor.execute(request("dev/feature", "apply", head, event="pull_request"))
    assert on_pr.status is Status.FAILED and "only runs for push events" in on_pr.message
