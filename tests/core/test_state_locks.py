"""State locks, with real Terraform and the emulator's S3 state and DynamoDB lock table: plans read the state
without the lock, applies wait for it, a stale lock names its recovery (which works), and an apply whose pipeline
process is killed (kill -9) finishes on its own: state saved, lock released."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pipelines_dagster.core.model import Status
from pipelines_dagster.core.statelock import parse_created
from tests.conftest import ACCOUNTS, LOCK_TABLE, Aws, null_unit
from tests.core.test_engine import request

DEV = ACCOUNTS["dev"]
ROOT = Path(__file__).resolve().parents[2]


def lock_path(unit: str) -> str:
    return f"{Aws.bucket(DEV)}/{unit}/terraform.tfstate"


def hold_lock(aws, unit: str, created: str, who: str = "alice@laptop") -> str:
    """A lock item as Terraform writes one, left in the unit's lock table."""
    lock_id = str(uuid.uuid4())
    info = {"ID": lock_id, "Operation": "OperationTypeApply", "Info": "", "Who": who, "Version": "1.0.3",
            "Created": created, "Path": lock_path(unit)}
    aws.client("dynamodb", DEV).put_item(TableName=LOCK_TABLE, Item={"LockID": {"S": lock_path(unit)},
                                                                     "Info": {"S": json.dumps(info)}})
    return lock_id


def lock_item(aws, unit: str) -> dict | None:
    item = aws.client("dynamodb", DEV).get_item(TableName=LOCK_TABLE, Key={"LockID": {"S": lock_path(unit)}})
    return item.get("Item")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_plans_read_a_locked_state_and_applies_wait_for_the_lock_up_to_their_timeout(repo, aws, make_executor,
                                                                                      settings):
    unit = f"dev/locked-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    lock_id = hold_lock(aws, unit, now_rfc3339())
    executor = make_executor(settings=dataclasses.replace(settings, lock_timeout="3s"))

    plan = executor.execute(request(unit, "plan", head))
    assert plan.status is Status.SUCCEEDED, plan.message + plan.output
    assert "-lock=false" in plan.output and plan.summary.add == 2

    started = time.monotonic()
    apply = executor.execute(request(unit, "apply", head))
    assert apply.status is Status.STATE_LOCKED, apply.message + apply.output
    assert time.monotonic() - started >= 3 and "-lock-timeout=3s" in apply.output
    assert apply.lock.id == lock_id and apply.lock.who == "alice@laptop" and apply.lock.stale is None
    assert lock_id in apply.message and "alice@laptop" in apply.message and "after waiting 3s" in apply.message
    assert apply.exit_code == 1 and apply.to_dict()["lock"]["id"] == lock_id
    assert aws.state(DEV, f"{unit}/terraform.tfstate") is None  # nothing applied

    # the lock goes away while an apply waits for it: the apply goes ahead
    patient = make_executor(settings=dataclasses.replace(settings, lock_timeout="60s"))
    release = threading.Timer(4, lambda: aws.client("dynamodb", DEV).delete_item(
        TableName=LOCK_TABLE, Key={"LockID": {"S": lock_path(unit)}}))
    release.start()
    started = time.monotonic()
    try:
        waited = patient.execute(request(unit, "apply", head))
    finally:
        release.cancel()
    assert waited.status is Status.SUCCEEDED, waited.message + waited.output
    assert time.monotonic() - started >= 4
    assert len(aws.state(DEV, f"{unit}/terraform.tfstate")["resources"][0]["instances"]) == 2


def test_plans_can_be_set_to_take_the_lock(repo, aws, make_executor, settings):
    unit = f"dev/planlock-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    hold_lock(aws, unit, now_rfc3339())

    plan = make_executor(settings=dataclasses.replace(settings, plan_lock=True, lock_timeout=None)).execute(
        request(unit, "plan", head))

    assert plan.status is Status.STATE_LOCKED, plan.message + plan.output
    assert "$ terraform plan -input=false -no-color -out=$RUN_DIR/work/plan.tfplan\n" in plan.output


def test_a_lock_older_than_any_action_is_stale_and_unlock_recovers(repo, aws, make_executor, settings):
    unit = f"dev/stale-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    lock_id = hold_lock(aws, unit, "2024-05-01T10:00:00Z")
    executor = make_executor(settings=dataclasses.replace(settings, lock_timeout="1s"))

    locked = executor.execute(request(unit, "apply", head))

    assert locked.status is Status.STATE_LOCKED, locked.message + locked.output
    assert locked.lock.stale and "older than" in locked.lock.stale
    assert locked.message.startswith(f"the state lock ID {lock_id} is stale (held by alice@laptop since 2024-05-01")
    assert f"--unit {unit} --lock-id {lock_id}`" in locked.message and "pipelines-dagster unlock" in locked.message
    assert f"force-unlock -force {lock_id}` in {unit} with account dev's apply role" in locked.message

    unlocked = executor.force_unlock(unit, lock_id, head)
    assert unlocked.status is Status.SUCCEEDED, unlocked.message + unlocked.output
    assert unlocked.role_arn == f"arn:aws:iam::{DEV}:role/pipelines-apply"
    assert lock_item(aws, unit) is None
    assert executor.execute(request(unit, "apply", head)).status is Status.SUCCEEDED


def test_unlock_needs_a_deploy_branch_commit(repo, aws, make_executor):
    unit = f"dev/nounlock-{uuid.uuid4().hex[:6]}"
    repo.git("checkout", "-q", "-b", "side")
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    lock_id = hold_lock(aws, unit, "2024-05-01T10:00:00Z")

    refused = make_executor().force_unlock(unit, lock_id, head)

    assert refused.status is Status.FAILED and "refusing to assume the apply role" in refused.message
    assert lock_item(aws, unit) is not None


def test_a_lock_left_by_a_killed_terraform_of_ours_is_stale_because_its_process_is_gone(repo, aws, make_executor,
                                                                                        settings, tmp_path):
    unit = f"dev/killed-{uuid.uuid4().hex[:6]}"
    # the provisioner kills its parent, Terraform itself, in the middle of the apply: the lock stays behind
    extra = '''resource "null_resource" "suicide" {
  provisioner "local-exec" {
    command = "kill -9 $PPID"
  }
}
'''
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=0, extra=extra)})
    executor = make_executor(settings=dataclasses.replace(settings, lock_timeout="1s",
                                                          holders_dir=str(tmp_path / "holders")))

    killed = executor.execute(request(unit, "apply", head))
    # Terraform runs its work in a child of its own (a panic wrapper), which exits 255 when that child is killed
    assert killed.status is Status.FAILED and killed.exit_code == 255, killed.message + killed.output
    left = json.loads(lock_item(aws, unit)["Info"]["S"])
    assert [json.loads(p.read_text())["who"] for p in (tmp_path / "holders").glob("*.json")] == [left["Who"]]

    again = executor.execute(request(unit, "apply", head))

    assert again.status is Status.STATE_LOCKED, again.message + again.output
    assert again.lock.id == left["ID"] and "that process is gone" in again.lock.stale
    assert again.message.startswith(f"the state lock ID {left['ID']} is stale (held by {left['Who']} since ")
    assert executor.force_unlock(unit, left["ID"], head).ok
    assert lock_item(aws, unit) is None


def test_a_lock_held_by_a_live_process_of_ours_is_not_stale(tmp_path):
    from pipelines_dagster.core.statelock import Holders, stale_reason, who

    holders = Holders(tmp_path / "holders")
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")
    me = who("nobody")
    with holders.holding(os.getpid(), me, "dev/x", "apply") as hold:
        assert stale_reason(me, created, holders, max_age_s=3600) is None  # its holder is alive
        assert stale_reason("alice@elsewhere", created, holders, max_age_s=3600) is None  # cannot tell
        assert "older than 3600 s" in stale_reason("alice@elsewhere", "2024-05-01 10:00:00 +0000 UTC", holders,
                                                   max_age_s=3600)
        hold.exit_code = 0
    assert list((tmp_path / "holders").iterdir()) == []  # ended normally: it released its lock itself
    assert parse_created("2024-05-01 10:00:00.5 +0200 CEST") == parse_created("2024-05-01T08:00:00.5Z")


def test_killing_the_pipeline_process_mid_apply_loses_no_state_and_leaves_no_lock(repo, aws, cli_env, drop_box):
    unit = f"dev/survive-{uuid.uuid4().hex[:6]}"
    started_marker = drop_box / "apply-started"
    extra = f'''resource "null_resource" "slow" {{
  depends_on = [null_resource.item]
  provisioner "local-exec" {{
    command = "touch {started_marker}; sleep 4; echo slow work done"
  }}
}}
'''
    repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=2, extra=extra)})
    env = dict(cli_env, PIPELINES_WORK_DIR=str(drop_box), PIPELINES_CACHE_DIR=str(drop_box / "cache"))
    cli = subprocess.Popen([sys.executable, "-m", "pipelines_dagster.cli", "execute", "--repo", str(repo.path),
                            "--ref", "main", "--unit", unit, "--action", "apply", "--event", "push"],
                           env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not started_marker.exists():
            assert cli.poll() is None, cli.communicate()
            assert time.monotonic() < deadline, "the apply never reached the slow resource"
            time.sleep(0.1)
        cli.kill()  # kill -9 of `pipelines-dagster execute` in the middle of the apply
        cli.wait(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == -signal.SIGKILL

    key = f"{unit}/terraform.tfstate"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = aws.state(DEV, key)
        if state and {r["name"] for r in state["resources"]} == {"item", "slow"} and lock_item(aws, unit) is None:
            break
        time.sleep(0.5)
    state = aws.state(DEV, key)
    assert state is not None, "Terraform died with the pipeline: no state was written"
    assert {r["name"]: len(r["instances"]) for r in state["resources"]} == {"item": 2, "slow": 1}
    assert lock_item(aws, unit) is None, "the state lock was left behind"
    # Terraform finished on its own and said so in its output file, in the run folder the dead process left
    [log] = list(drop_box.glob("pipelines-units/pipelines-run-*/logs/*-apply.log"))
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in log.read_text()


def test_the_recovery_command_a_stale_lock_names_releases_it(repo, aws, cli_env):
    unit = f"dev/cli-stale-{uuid.uuid4().hex[:6]}"
    repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    lock_id = hold_lock(aws, unit, "2024-05-01T10:00:00Z")
    env = dict(cli_env, PIPELINES_LOCK_TIMEOUT="1s")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines_dagster.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=180)

    locked = cli("execute", "--repo", str(repo.path), "--ref", "main", "--unit", unit, "--action", "apply",
                 "--event", "push")
    assert locked.returncode == 1, locked.stderr
    out = json.loads(locked.stdout)
    assert out["status"] == "state_locked" and out["lock"]["id"] == lock_id and out["lock"]["stale"]
    command = out["message"].split("recover with `", 1)[1].split("`", 1)[0]
    assert command.startswith("pipelines-dagster unlock --repo ")

    unlocked = cli(*command.split()[1:])

    assert unlocked.returncode == 0, unlocked.stderr + unlocked.stdout
    assert f"released the state lock {lock_id} of {unit}" in unlocked.stdout
    assert f"role       arn:aws:iam::{DEV}:role/pipelines-apply" in unlocked.stdout
    assert lock_item(aws, unit) is None
    again = cli("execute", "--repo", str(repo.path), "--ref", "main", "--unit", unit, "--action", "apply",
                "--event", "push")
    assert json.loads(again.stdout)["status"] == "succeeded", again.stdout
