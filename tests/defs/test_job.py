"""The job, run in-process by Dagster with real git, Terraform, the AWS emulator and the GitHub fake."""

import http.server
import json
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest

from pipelines_dagster.core import run_requests
from pipelines_dagster.core.credentials import CredentialProvider
from pipelines_dagster.core.model import Status
from pipelines_dagster.defs import jobs
from pipelines_dagster.defs import jobs as pipeline_jobs
from pipelines_dagster.defs.jobs import make_apply_job
from pipelines_dagster.demo.aws import state_bucket
from tests.conftest import ACCOUNTS, null_unit, terraform_binary
from tests.defs.conftest import GH_REPO
from tests.defs.jobs import launch, run_job


@pytest.fixture
def env(aws, plugin_dir, tf_cli_config, token_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(terraform_binary()).parent}:/usr/bin:/bin")
    monkeypatch.setenv("PIPELINES_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tf_cli_config))
    for account_id in ACCOUNTS.values():
        aws.prepare_account(account_id)
    return {"plugin_dir": str(plugin_dir)}


def units(run):
    return run.by_unit()


def test_pull_request_plans_three_units_and_reports_in_dagster(repo, aws, env):
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({f"dev/u{i}/main.tf": null_unit(aws.endpoint, f"dev/u{i}", count=i + 1) for i in range(3)})
    run = run_job(repo, env, "pull_request", base, "feature")
    assert run.success, run.outcomes
    plans = units(run)
    assert set(plans) == {"dev/u0", "dev/u1", "dev/u2"}
    # the plan job: its plans and their report, no apply step and no wave stage, not even skipped
    steps = {e.step_key: e.event_type_value for e in run.all_events
             if e.event_type_value in ("STEP_SUCCESS", "STEP_SKIPPED")}
    assert steps == dict.fromkeys({"orchestrate", "report", *(f"plan[{o.change.key}]" for o in plans.values())},
                                  "STEP_SUCCESS")
    assert run.result.dagster_run.job_name == "infrastructure_plan"
    assert not [n for n in run.result.job_def.all_node_defs if "apply" in n.name or "wave" in n.name]
    assert {u: (o.status.value, o.summary.add) for u, o in plans.items()} == {
        "dev/u0": ("succeeded", 1), "dev/u1": ("succeeded", 2), "dev/u2": ("succeeded", 3)}
    assert all(o.role_arn.endswith(":role/pipelines-plan") for o in plans.values())
    md = run.report()  # local mode: the report is markdown metadata on the report step
    assert md.count("| ✅ succeeded | ModuleAdded |") == 3 and "2 to add, 0 to change, 0 to destroy" in md
    assert "branch feature · commit" in md  # what the run is of
    # and as Dagster shows it best: a table of the changes, each unit's plan an entry of its own (no HTML)
    metadata = pipeline_jobs.report_output(run.all_events).event_specific_data.metadata
    rows = {r.data["unit"]: r.data for r in metadata["changes"].records}
    assert {u: (r["status"], r["plan"]) for u, r in rows.items()} == {
        f"dev/u{i}": ("succeeded", f"{i + 1} to add, 0 to change, 0 to destroy, 1 output change") for i in range(3)}
    entry = metadata["plan: dev/u1"].value
    assert "`null_resource.item[1]`: create" in entry and "`output.items`: create" in entry and "<" not in entry


def test_push_applies_in_dependency_order_and_skips_dependents_of_a_failure(repo, aws, env):
    repo.commit({".pipelines.yml": "deploy_branch: main\ndependencies:\n  dev/app: [dev/db]\n  dev/db: [dev/net]\n"
                                   "  dev/worker: [dev/broken]\n"})
    base = repo.git("rev-parse", "HEAD")
    repo.commit({"dev/net/main.tf": null_unit(aws.endpoint, "dev/net"),
                 "dev/db/main.tf": null_unit(aws.endpoint, "dev/db"),
                 "dev/app/main.tf": null_unit(aws.endpoint, "dev/app"),
                 "dev/broken/main.tf": null_unit(aws.endpoint, "dev/broken", extra='resource "nope" "x" {}\n'),
                 "dev/worker/main.tf": null_unit(aws.endpoint, "dev/worker")})
    run = run_job(repo, env, "push", base, "main")
    assert not run.success  # the failed change's step fails the run, after its output
    by = units(run)
    assert {u: o.status.value for u, o in by.items()} == {
        "dev/net": "succeeded", "dev/db": "succeeded", "dev/app": "succeeded", "dev/broken": "failed",
        "dev/worker": "skipped"}
    assert by["dev/net"].finished_at <= by["dev/db"].started_at
    assert by["dev/db"].finished_at <= by["dev/app"].started_at
    assert "dev/broken" in by["dev/worker"].message
    assert aws.state(ACCOUNTS["dev"], "dev/app/terraform.tfstate") is not None
    assert aws.state(ACCOUNTS["dev"], "dev/worker/terraform.tfstate") is None
    assert [o.change.unit for o in run.outcomes if o.status.failed] == ["dev/broken"]
    # one step per change: the failed change's own step failed (so "re-execute from failure" runs it again)
    failure = run.failures()
    assert [e.step_key for e in failure] == [f"apply_wave_0[{by['dev/broken'].change.key}]"]
    assert failure[0].event_specific_data.user_failure_data.metadata["reported"].value is True
    steps = {e.step_key for e in run.all_events if e.event_type_value == "STEP_START"}
    assert {k.split("[")[0] for k in steps if "[" in k} == {"apply_wave_0", "apply_wave_1", "apply_wave_2"}
    assert "report" in steps and run.result.dagster_run.job_name == "infrastructure_apply"


def test_github_pull_request_gets_one_comment_and_a_status(repo, aws, env, github):
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({f"prod/p{i}/main.tf": null_unit(aws.endpoint, f"prod/p{i}") for i in range(3)})
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    github.clear_log()
    run = run_job(repo, env, "pull_request", base, "feature", pr=number, github_repo=GH_REPO)
    assert run.success
    comments = github.comments(GH_REPO, number)
    assert len(comments) == 1
    body = comments[0]["body"]
    assert body.count("| ✅ succeeded | ModuleAdded | `prod/p") == 3 and head[:12] in body
    for i in range(3):  # each unit's resource changes, collapsed
        assert (f"<details><summary>prod/p{i}: plan, 2 resource changes</summary>\n\n"
                "- `null_resource.item[0]`: create\n- `null_resource.item[1]`: create\n") in body
    statuses = github.statuses(GH_REPO, head)
    assert [s["state"] for s in statuses] == ["pending", "success"]
    assert statuses[-1]["context"] == "pipelines-dagster"
    assert len(github.writes()) <= 6


def test_github_push_failure_opens_one_issue(repo, aws, env, github):
    base = repo.git("rev-parse", "HEAD")
    head = repo.commit({"prod/bad/main.tf": null_unit(aws.endpoint, "prod/bad", extra='resource "nope" "x" {}\n')})
    github.add_commit(GH_REPO, head)
    run = run_job(repo, env, "push", base, "main", github_repo=GH_REPO)
    assert [o.change.unit for o in run.outcomes if o.status.failed] == ["prod/bad"]
    issues = [i for i in github.issues(GH_REPO) if "prod/bad" in i["title"]]
    assert len(issues) == 1 and head[:12] in issues[0]["title"]
    assert "❌ failed" in issues[0]["body"]


def test_fork_pull_request_gets_no_credentials(repo, aws, env, github):
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({"prod/f/main.tf": null_unit(aws.endpoint, "prod/f")})
    github.add_repo("mallory/infrastructure-live", fork_of=GH_REPO)
    number = github.add_pull_request(GH_REPO, "feature", head_repo="mallory/infrastructure-live", head_sha=head)
    run = run_job(repo, env, "pull_request", base, "feature", pr=number, github_repo=GH_REPO)
    assert {o.status for o in run.outcomes} == {Status.SKIPPED}
    assert all("fork" in o.message for o in run.outcomes)
    assert run.outcomes[0].role_arn is None


def test_github_502_and_rate_limit_during_a_run_are_retried(repo, aws, env, github):
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({"prod/r/main.tf": null_unit(aws.endpoint, "prod/r")})
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    github.fail(r".*/issues/\d+/comments", status=502, times=1)
    github.secondary_rate_limit(r".*/statuses/.*", retry_after=1, times=1)
    run = run_job(repo, env, "pull_request", base, "feature", pr=number, github_repo=GH_REPO)
    assert run.success and run.github_problems() == []
    assert len(github.comments(GH_REPO, number)) == 1
    assert [s["state"] for s in github.statuses(GH_REPO, head)] == ["pending", "success"]
    assert github.count(path=r".*/issues/\d+/comments") >= 3  # the failed request was repeated


def test_pull_request_diff_starts_where_the_branch_forked(repo, aws, env):
    fork_point = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({"dev/mine/main.tf": null_unit(aws.endpoint, "dev/mine")})
    repo.git("checkout", "-q", "main")
    repo.commit({"dev/theirs/main.tf": null_unit(aws.endpoint, "dev/theirs")})  # main moves on
    run = run_job(repo, env, "pull_request", "main", "feature")
    assert run.success
    assert [(o.change.type.value, o.change.unit) for o in run.outcomes] == [("ModuleAdded", "dev/mine")]
    assert repo.git("merge-base", "main", "feature") == fork_point


def test_slow_detection_first_says_so_on_the_pull_request(repo, aws, env, github, monkeypatch):

    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({"prod/s/main.tf": null_unit(aws.endpoint, "prod/s")})
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    github.clear_log()
    monkeypatch.setattr(jobs, "DETECTING_NOTE_AFTER_S", 0.0)
    run = run_job(repo, env, "pull_request", base, "feature", pr=number, github_repo=GH_REPO)
    assert run.success
    comment_writes = [r for r in github.writes() if "/comments" in r.path]
    assert [r.method for r in comment_writes] == ["POST", "PATCH", "PATCH"]  # detecting, the list, the result
    assert len(github.comments(GH_REPO, number)) == 1


def test_push_run_launched_without_the_apply_lock_waits_for_the_apply_in_progress(repo, aws, env, monkeypatch):
    base = repo.git("rev-parse", "HEAD")
    repo.commit({"dev/locked/main.tf": null_unit(aws.endpoint, "dev/locked")})
    lock = run_requests.repo_identity(str(repo.path))
    with dg.instance_for_test() as instance:
        config = {"ops": {"orchestrate": {"config": {"base_ref": base, "head_ref": "main"}}}}
        other = instance.create_run_for_job(make_apply_job(), run_config=config, status=dg.DagsterRunStatus.STARTED,
                                            tags={run_requests.TAG_APPLY_LOCK: lock})
        run = run_job(repo, env, "push", base, "main", instance=instance,  # as from the Launchpad: no tags
                      PIPELINES_APPLY_LOCK_RETRIES="2", PIPELINES_APPLY_LOCK_WAIT_S="0.2")
        assert not run.success
        assert instance.get_run_by_id(run.run_id).tags[run_requests.TAG_APPLY_LOCK] == lock  # it took the lock
        retries = [e for e in run.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 2
        failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "orchestrate"
        assert other.run_id in failure.event_specific_data.error.message  # shown in the UI
        assert aws.state(ACCOUNTS["dev"], "dev/locked/terraform.tfstate") is None  # nothing applied

        instance.report_run_failed(other)  # the other apply ends: this one goes ahead
        run = run_job(repo, env, "push", base, "main", instance=instance)
        assert run.success and units(run)["dev/locked"].status is Status.SUCCEEDED
        assert aws.state(ACCOUNTS["dev"], "dev/locked/terraform.tfstate") is not None


def test_deploy_branch_applies_and_destroys_are_materializations_plans_observations(repo, aws, env):
    instance = dg.DagsterInstance.ephemeral()
    unit = f"dev/lineage-{uuid.uuid4().hex[:6]}"
    key = dg.AssetKey(["units", *unit.split("/")])
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=2)})
    run_job(repo, env, "pull_request", base, "feature", pr=5, instance=instance)
    [plan] = [r.asset_observation.metadata for r in instance.fetch_observations(key, limit=5).records]
    assert {k: plan[k].value for k in ("commit", "pr", "action", "status", "resources_added")} == {
        "commit": head, "pr": 5, "action": "plan", "status": "succeeded", "resources_added": 2}
    table = plan["resource_changes"].value  # the plan's resources, from show -json, as a table
    assert [c.name for c in table.schema.columns] == ["address", "action"]
    assert [(r.data["address"], r.data["action"]) for r in table.records] == [
        ("null_resource.item[0]", "create"), ("null_resource.item[1]", "create")]
    assert instance.fetch_materializations(key, limit=5).records == []  # a plan deploys nothing

    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--ff-only", "feature")
    applied = run_job(repo, env, "push", base, "main", instance=instance)
    repo.commit({unit: None}, "remove the unit")
    destroyed = run_job(repo, env, "push", head, "main", instance=instance)
    records = instance.fetch_materializations(key, limit=5).records  # newest first
    assert [r.run_id for r in records] == [destroyed.run_id, applied.run_id]
    destroy, apply = (r.asset_materialization.metadata for r in records)
    assert {k: apply[k].value for k in ("commit", "action", "status", "resources_added", "resources_destroyed")} == {
        "commit": head, "action": "apply", "status": "succeeded", "resources_added": 2, "resources_destroyed": 0}
    assert (destroy["action"].value, destroy["resources_destroyed"].value) == ("destroy", 2)
    assert {r.data["action"] for r in destroy["resource_changes"].value.records} == {"delete"}
    assert apply["role_arn"].value.endswith(":role/pipelines-apply")
    assert apply["duration_s"].value > 0 and apply["account"].value == "dev"


def test_a_merged_pull_requests_apply_names_it_in_the_materialization(repo, aws, env, github):
    instance = dg.DagsterInstance.ephemeral()
    unit = f"prod/merged-{uuid.uuid4().hex[:6]}"
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--ff-only", "feature")
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    github.merge_pull_request(GH_REPO, number, merge_commit_sha=head)
    run = run_job(repo, env, "push", base, "main", github_repo=GH_REPO, instance=instance)
    assert run.success, run.outcomes
    [record] = instance.fetch_materializations(dg.AssetKey(["units", *unit.split("/")]), limit=5).records
    assert (record.asset_materialization.metadata["pr"].value, record.run_id) == (number, run.run_id)


class ThrottlingSts:
    """A proxy in front of the AWS emulator that answers the first `times` AssumeRoleWithWebIdentity calls as STS
    does when it throttles (HTTP 400, code Throttling) and passes every other request through."""

    BODY = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            b'<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>')

    def __init__(self, target: str, times: int):
        proxy = self
        self.target, self.left, self.throttled = target.rstrip("/"), times, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if b"Action=AssumeRoleWithWebIdentity" in body and proxy.left > 0:
                    proxy.left, proxy.throttled = proxy.left - 1, proxy.throttled + 1
                    return self._reply(400, "text/xml", proxy.BODY)
                request = urllib.request.Request(proxy.target + self.path, data=body, method="POST", headers={
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        self._reply(answer.status, answer.headers.get("Content-Type", ""), answer.read())
                except urllib.error.HTTPError as answer:
                    self._reply(answer.code, answer.headers.get("Content-Type", ""), answer.read())

            def _reply(self, status, content_type, data):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_sts_throttling_that_outlasts_the_executors_backoff_is_retried_by_dagster(repo, aws, env, monkeypatch):
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({"dev/throttled/main.tf": null_unit(aws.endpoint, "dev/throttled")})
    sts = ThrottlingSts(aws.endpoint, times=CredentialProvider.__init__.__kwdefaults__["max_attempts"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", sts.url)  # STS through the proxy; Terraform's state goes to the emulator
    try:
        run = run_job(repo, env, "pull_request", base, "feature", PIPELINES_TRANSIENT_RETRY_WAIT_S="0.1")
    finally:
        sts.close()
    assert sts.throttled == 6 and sts.left == 0
    retried = [e for e in run.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key.split("[")[0] for e in retried] == ["plan"]  # the unit's own step
    assert run.success and units(run)["dev/throttled"].status is Status.SUCCEEDED
    assert units(run)["dev/throttled"].role_arn.endswith(":role/pipelines-plan")


def test_github_failing_beyond_its_client_retries_gets_the_report_retried_by_dagster(repo, aws, env, github,
                                                                                      monkeypatch):
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit({"prod/gh/main.tf": null_unit(aws.endpoint, "prod/gh")})
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    # a secondary rate limit asking for a longer wait than the client accepts: both status writes fail at once
    github.secondary_rate_limit(r".*/statuses/.*", retry_after=100_000, times=2, method="POST")
    run = run_job(repo, env, "pull_request", base, "feature", pr=number, github_repo=GH_REPO,
                  PIPELINES_TRANSIENT_RETRY_WAIT_S="0.1")
    retried = [e.step_key for e in run.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried == ["report"]
    assert run.success and run.github_problems() == []
    assert [s["state"] for s in github.statuses(GH_REPO, head)] == ["success"]  # pending was refused
    assert len(github.comments(GH_REPO, number)) == 1  # the retried report updated the same comment


def test_reexecute_from_failure_runs_only_the_failed_change_and_updates_the_same_comment(repo, aws, env, github):
    """The UI's "Re-execute from failure": the failed change's step runs again (its cause fixed meanwhile: the
    state it reads now exists), the others' plans are reused, and the report edits the pull request's comment."""
    from tests.defs.test_reconcile import reads_state_of

    tag = uuid.uuid4().hex[:6]
    ok, needs, missing = f"dev/ok-{tag}", f"dev/needs-{tag}", f"dev/later-{tag}"
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    reads_missing = reads_state_of(aws.endpoint, missing)
    head = repo.commit({f"{ok}/main.tf": null_unit(aws.endpoint, ok),
                        f"{needs}/main.tf": null_unit(aws.endpoint, needs, extra=reads_missing)})
    number = github.add_pull_request(GH_REPO, "feature", head_sha=head)
    instance = dg.DagsterInstance.ephemeral()
    first = run_job(repo, env, "pull_request", base, "feature", pr=number, github_repo=GH_REPO, instance=instance)
    assert not first.success
    assert {u: o.status.value for u, o in units(first).items()} == {ok: "succeeded", needs: "failed"}
    [comment] = github.comments(GH_REPO, number)
    assert "❌ failed" in comment["body"] and f"`{needs}`" in comment["body"]

    s3 = aws.client("s3", ACCOUNTS["dev"])  # what the failed plan was missing appears
    s3.put_object(Bucket=state_bucket(ACCOUNTS["dev"]), Key=f"{missing}/terraform.tfstate", Body=json.dumps({
        "version": 4, "terraform_version": "1.0.3", "serial": 1, "lineage": tag, "resources": [],
        "outputs": {"items": {"value": 2, "type": "number"}}}).encode())
    github.clear_log()
    again = launch(repo, env, None, github_repo=GH_REPO, instance=instance,
                   reexecution=dg.ReexecutionOptions.from_failure(first.run_id, instance))
    assert again.success, again.outcomes
    ran = {e.step_key for e in again.all_events if e.event_type_value == "STEP_START"}
    plans = {k for k in ran if k.startswith("plan[")}
    assert plans == {f"plan[{units(first)[needs].change.key}]"}  # only the failed change
    assert "orchestrate" not in ran and "report" in ran
    assert {u: o.status.value for u, o in units(again).items()} == {ok: "succeeded", needs: "succeeded"}
    [updated] = github.comments(GH_REPO, number)  # the same comment, edited
    assert updated["id"] == comment["id"] and "❌" not in updated["body"]
    assert updated["body"].count("| ✅ succeeded |") == 2


def test_steps_pass_each_other_validated_json_and_a_tampered_output_fails_the_step_that_loads_it(repo, aws, env,
                                                                                              tmp_path):
    """What travels between steps is JSON of the typed contracts (no pickle), checked when a step loads it: an
    output file changed between runs fails the re-executed step that reads it, naming the file, before it runs."""
    from pipelines_dagster.core.dispatch import Progress, StepChanges

    unit = f"dev/io-{uuid.uuid4().hex[:6]}"
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = run_job(repo, env, "pull_request", base, "feature", instance=instance)
        assert run.success, run.outcomes
        storage = Path(instance.storage_directory()) / run.run_id
        [item_file] = (storage / "orchestrate" / "changes").iterdir()
        item = StepChanges.model_validate_json(item_file.read_text())
        assert [c.unit for c in item.changes] == [unit]
        assert Progress.model_validate_json((storage / "report" / "result").read_text()) == run.progress
        plan_step = f"plan[{item_file.name}]"
        assert json.loads((storage / plan_step / "result").read_text())[0]["status"] == "succeeded"

        item_file.write_text(json.dumps({"changes": "all of them", "spec": {}}))
        again = launch(repo, env, None, instance=instance, reexecution=dg.ReexecutionOptions(
            parent_run_id=run.run_id, step_selection=[plan_step]))
        assert not again.success
        [failure] = again.failures()
        assert failure.step_key == plan_step
        assert f"{item_file}: not a valid StepChanges" in str(failure.event_specific_data.error)
        assert not any(e.event_type_value in ("STEP_INPUT", "STEP_OUTPUT") for e in again.all_events)  # never ran

        (storage / plan_step / "result").unlink()  # as if the first run's steps had run in another pod
        report = launch(repo, env, None, instance=instance, reexecution=dg.ReexecutionOptions(
            parent_run_id=run.run_id, step_selection=["report"]))
        [failure] = report.failures()
        error = str(failure.event_specific_data.error)
        assert f"{storage / plan_step / 'result'}: the output {plan_step}.result is missing" in error
        assert f"run {run.run_id} wrote it" in error and "PIPELINES_STEP_OUTPUTS_BUCKET" in error


def test_with_a_step_outputs_bucket_steps_pass_each_other_through_s3(repo, aws, env, tmp_path, monkeypatch):
    """PIPELINES_STEP_OUTPUTS_BUCKET (step pods, and run pods re-executing another pod's run, share no disk): the
    values go to S3 with the pipeline's own AWS identity, and a re-executed report finds the plans there."""
    import boto3

    from pipelines_dagster.core.model import Outcome

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "pipeline-pod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "pipeline-pod")
    bucket = f"step-outputs-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    unit = f"dev/s3io-{uuid.uuid4().hex[:6]}"
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)})
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = run_job(repo, env, "pull_request", base, "feature", instance=instance,
                      PIPELINES_STEP_OUTPUTS_BUCKET=bucket)
        assert run.success, run.outcomes
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        prefix = f"pipelines-step-outputs/{run.run_id}/"
        [plan_key] = [k for k in keys if k.startswith(prefix + "plan[")]
        assert {prefix + "orchestrate/progress", prefix + "report/result"} <= keys
        [outcome] = [Outcome.model_validate(o) for o in json.loads(
            s3.get_object(Bucket=bucket, Key=plan_key)["Body"].read())]
        assert outcome.change.unit == unit and outcome.status is Status.SUCCEEDED
        storage = Path(instance.storage_directory()) / run.run_id
        assert not (storage / "orchestrate").exists()  # nothing on the local disk

        again = launch(repo, env, None, instance=instance, PIPELINES_STEP_OUTPUTS_BUCKET=bucket,
                       reexecution=dg.ReexecutionOptions(parent_run_id=run.run_id, step_selection=["report"]))
        assert again.success and [o.change.unit for o in again.outcomes] == [unit]

        lost = run_job(repo, env, "pull_request", base, "feature", instance=instance,
                       PIPELINES_STEP_OUTPUTS_BUCKET=f"{bucket}-gone")
        [failure] = lost.failures()
        assert failure.step_key == "orchestrate"
        assert (f"s3://{bucket}-gone/pipelines-step-outputs/{lost.run_id}/orchestrate/progress: cannot store the "
                "output: An error occurred (NoSuchBucket)") in str(failure.event_specific_data.error)
