"""The sensors, evaluated with Dagster's own tick evaluation against real git repositories (a bare "remote" and a
work clone) and the GitHub fake over HTTP."""

import json
import socket
import time

import dagster as dg
import pytest

from pipelines_dagster.core import run_requests
from pipelines_dagster.core.lineage import Lineage, read_lineage
from pipelines_dagster.definitions import run_in_process
from pipelines_dagster.defs import sensors
from pipelines_dagster.defs.jobs import make_apply_job, make_plan_job
from pipelines_dagster.defs.resources import resources_from_settings
from pipelines_dagster.settings import Settings
from tests.conftest import GitRepo
from tests.defs.conftest import GH_REPO
from tests.fakes.github_fake import GitHubFake

FORK = "mallory/infrastructure-live"
UI = "http://dagster.example"

PLAN_JOB, APPLY_JOB = make_plan_job(), make_apply_job()
pr_sensor = sensors.make_pull_request_sensor(PLAN_JOB)
deploy_sensor = sensors.make_deploy_branch_sensor(APPLY_JOB)
failure_sensor = sensors.make_run_failure_sensor([PLAN_JOB, APPLY_JOB])


class Remote:
    """A work repository and its bare "remote" (what PIPELINES_REPO_URL names), as GitHub would hold it."""

    def __init__(self, root):
        self.work = GitRepo(root / "work")
        self.main0 = self.work.commit({".pipelines.yml": "deploy_branch: main\n", "dev/a/main.tf": "# a\n"}, "init")
        self.bare = root / "remote.git"
        self.work.git("clone", "-q", "--bare", str(self.work.path), str(self.bare))
        self.work.git("remote", "add", "origin", str(self.bare))

    def push(self, *refspecs: str) -> None:
        self.work.git("push", "-q", "--force", "origin", *refspecs)

    def branch(self, name: str, files: dict, start: str = "main") -> str:
        self.work.git("checkout", "-q", "-B", name, start)
        sha = self.work.commit(files, f"change on {name}")
        self.work.git("checkout", "-q", "main")
        return sha

    def sha(self, ref: str) -> str:
        return self.work.git("rev-parse", ref)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    return Remote(tmp_path)


def resources(location, github_repo=None) -> dict:
    return resources_from_settings(Settings.from_env(repo_url=str(location), github_repo=github_repo, ui_url=UI,
                                                     github_write_pause_s=0))


def tick(sensor, res: dict, cursor: str | None = None):
    """One evaluation, as the daemon does it: a fresh context holding only the previous cursor."""
    with dg.build_sensor_context(cursor=cursor, resources=res, sensor_name=sensor.name) as context:
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message


def orchestrate_config(request: dg.RunRequest) -> dict:
    return request.run_config["ops"]["orchestrate"]["config"]


def open_pull_request(remote: Remote, fake: GitHubFake, branch: str, files: dict, start: str = "main") -> tuple:
    """A branch pushed to the remote, a pull request for it on the fake, and GitHub's refs/pull/N/head."""
    sha = remote.branch(branch, files, start)
    remote.push(f"{branch}:refs/heads/{branch}")
    number = fake.add_pull_request(GH_REPO, branch, head_sha=sha)
    remote.push(f"{sha}:refs/pull/{number}/head")
    return number, sha


# ------------------------------------------------------------------------------------------ pull requests (GitHub)


def test_new_pull_request_head_gives_one_run_and_the_cursor_survives(remote, github):
    res = resources(remote.bare, GH_REPO)
    number, sha = open_pull_request(remote, github, "feature", {"dev/b/main.tf": "# b\n"})

    runs, cursor, _ = tick(pr_sensor, res)
    assert [r.run_key for r in runs] == [f"pr-{number}-{sha}"]
    assert orchestrate_config(runs[0]) == {"base_ref": "main", "head_ref": sha,
                                           "pr_number": number}
    assert runs[0].tags["pipelines/pr"] == str(number) and runs[0].tags["pipelines/sha"] == sha
    assert runs[0].tags["pipelines/event"] == "pull_request"
    assert json.loads(cursor)["prs"] == {str(number): sha}

    # the same head on the next tick (a new context, only the cursor carried over): nothing
    again, cursor2, skip = tick(pr_sensor, res, cursor)
    assert again == [] and skip and json.loads(cursor2)["prs"] == {str(number): sha}

    # a push to the pull request: exactly one new run, for the new head
    remote.work.git("checkout", "-q", "feature")
    sha2 = remote.work.commit({"dev/b/main.tf": "# b2\n"})
    remote.work.git("checkout", "-q", "main")
    remote.push("feature:refs/heads/feature", f"{sha2}:refs/pull/{number}/head")
    github.update_pull_request_head(GH_REPO, number, sha2)
    runs3, cursor3, _ = tick(pr_sensor, res, cursor2)
    assert [r.run_key for r in runs3] == [f"pr-{number}-{sha2}"]
    assert orchestrate_config(runs3[0])["head_ref"] == sha2
    assert tick(pr_sensor, res, cursor3)[0] == []


def test_plan_starts_at_the_merge_base_when_the_base_branch_moved_on(remote, github):
    res = resources(remote.bare, GH_REPO)
    number, sha = open_pull_request(remote, github, "feature", {"dev/b/main.tf": "# b\n"})
    main1 = remote.work.commit({"dev/c/main.tf": "# c, merged elsewhere\n"})
    remote.push("main:refs/heads/main")
    github.set_branch(GH_REPO, "main", main1)
    runs, _, _ = tick(pr_sensor, res)
    assert orchestrate_config(runs[0])["base_ref"] == "main"  # the base branch: a pull request tick runs no git
    assert runs[0].tags["pipelines/base-branch"] == "main"
    with dg.instance_for_test() as instance, run_in_process(
            "pull_request", runs[0].run_config, instance=instance, tags=runs[0].tags, environment={
                "PIPELINES_REPO_URL": str(remote.bare), "PIPELINES_GITHUB_REPO": GH_REPO,
                "PIPELINES_GITHUB_WRITE_PAUSE_S": "0"}) as result:
        plan = result.output_for_node("orchestrate", "progress").plan
    # from main's tip the diff would also "delete" dev/c; from the fork point it holds only the PR's change
    assert (plan.spec.base, plan.spec.head) == (remote.main0, sha) and remote.main0 != main1


def test_an_idle_tick_with_200_open_pull_requests_costs_no_rate_limit(remote, github):
    """The pull request sensor's tick lists open pull requests (two pages of 100); asked again with their ETags,
    unchanged pages are 304s, which GitHub does not count against the rate limit."""
    res = resources(remote.bare, GH_REPO)
    numbers = [github.add_pull_request(GH_REPO, f"feature-{i}", head_sha=f"{i + 1:040x}") for i in range(200)]
    counted = github.counted()
    runs, cursor, _ = tick(pr_sensor, res)
    assert len(runs) == 200 and github.counted() - counted == 2  # the first look reads both pages
    for _ in range(3):  # idle ticks, each with a client of its own, as the daemon's are
        github.clear_log()
        counted = github.counted()
        runs, cursor, _ = tick(pr_sensor, res, cursor)
        assert runs == [] and github.counted() == counted
        assert [r.status for r in github.log] == [304, 304] and github.writes() == []
    github.update_pull_request_head(GH_REPO, numbers[150], f"{999:040x}")  # a push: page 2 changed
    counted = github.counted()
    runs, cursor, _ = tick(pr_sensor, res, cursor)
    assert [r.run_key for r in runs] == [f"pr-{numbers[150]}-{999:040x}"]
    assert github.counted() - counted == 1
    # a resource of its own (a code location reloaded): one full listing, then idle again
    fresh = resources(remote.bare, GH_REPO)
    counted = github.counted()
    assert tick(pr_sensor, fresh, cursor)[0] == [] and github.counted() - counted == 2
    assert tick(pr_sensor, fresh, cursor)[0] == [] and github.counted() - counted == 2


def test_fork_pull_request_gets_no_run_and_exactly_one_comment(remote, github):
    res = resources(remote.bare, GH_REPO)
    github.add_repo(FORK, fork_of=GH_REPO)
    sha = remote.branch("evil", {"dev/a/main.tf": 'resource "null_resource" "x" {}\n'})
    number = github.add_pull_request(GH_REPO, "evil", head_repo=FORK, head_sha=sha)

    runs, cursor, _ = tick(pr_sensor, res)
    assert runs == []
    comments = github.comments(GH_REPO, number)
    assert len(comments) == 1 and "fork" in comments[0]["body"] and sha[:12] in comments[0]["body"]

    assert tick(pr_sensor, res, cursor)[0] == []  # next tick: nothing, no second comment
    assert tick(pr_sensor, res, None)[0] == []    # even with the cursor lost: the comment is found again
    assert len(github.comments(GH_REPO, number)) == 1
    assert json.loads(cursor)["prs"] == {str(number): sha}


def test_closed_pull_requests_are_ignored_and_leave_the_cursor(remote, github):
    res = resources(remote.bare, GH_REPO)
    closed, _ = open_pull_request(remote, github, "old", {"dev/o/main.tf": "# o\n"})
    github.close_pull_request(GH_REPO, closed)
    live, live_sha = open_pull_request(remote, github, "live", {"dev/l/main.tf": "# l\n"})
    runs, cursor, _ = tick(pr_sensor, res)
    assert [r.tags["pipelines/pr"] for r in runs] == [str(live)]
    github.close_pull_request(GH_REPO, live)
    runs, cursor, _ = tick(pr_sensor, res, cursor)
    assert runs == [] and json.loads(cursor)["prs"] == {}


def test_github_outage_skips_the_tick_quickly_and_keeps_the_cursor(remote, github):
    res = resources(remote.bare, GH_REPO)
    number, sha = open_pull_request(remote, github, "feature", {"dev/b/main.tf": "# b\n"})
    _, cursor, _ = tick(pr_sensor, res)
    github.fail(r"/pulls$", status=502, times=10)
    started = time.monotonic()
    runs, cursor2, skip = tick(pr_sensor, res, cursor)
    assert time.monotonic() - started < 15
    assert runs == [] and "502" in skip
    assert cursor2 == cursor


# ------------------------------------------------------------------------------------------ local mode


def test_local_mode_every_other_branch_of_the_remote_is_a_change_request(remote, github):
    res = resources(f"file://{remote.bare}")  # a URL: the sensor fetches its mirror every tick
    github.clear_log()
    a = remote.branch("feature-a", {"dev/b/main.tf": "# b\n"})
    remote.work.git("branch", "feature-b", "main")  # no commit of its own: nothing to plan
    remote.push("feature-a:refs/heads/feature-a", "feature-b:refs/heads/feature-b")

    runs, cursor, _ = tick(pr_sensor, res)
    assert [r.run_key for r in runs] == [f"branch-feature-a-{a}"]
    assert orchestrate_config(runs[0]) == {"base_ref": remote.main0, "head_ref": a,
                                           "pr_number": None}
    assert tick(pr_sensor, res, cursor)[0] == []

    # main moves on, feature-a gets a new commit, a new branch appears, feature-b is deleted
    remote.work.commit({"dev/c/main.tf": "# c\n"})
    remote.work.git("checkout", "-q", "feature-a")
    a2 = remote.work.commit({"dev/b/main.tf": "# b2\n"})
    remote.work.git("checkout", "-q", "main")
    c = remote.branch("feature-c", {"dev/d/main.tf": "# d\n"})
    remote.push("main:refs/heads/main", "feature-a:refs/heads/feature-a", "feature-c:refs/heads/feature-c",
                ":refs/heads/feature-b")
    runs, cursor, _ = tick(pr_sensor, res, cursor)
    by_key = {r.run_key: orchestrate_config(r) for r in runs}
    assert set(by_key) == {f"branch-feature-a-{a2}", f"branch-feature-c-{c}"}
    assert by_key[f"branch-feature-a-{a2}"]["base_ref"] == remote.main0  # its merge base, not main's new tip
    assert by_key[f"branch-feature-c-{c}"]["base_ref"] == remote.sha("main")
    assert set(json.loads(cursor)["branches"]) == {"feature-a", "feature-c"}
    assert github.log == []  # local mode makes no GitHub calls


# ------------------------------------------------------------------------------------------ deploy branch


def merge(remote: Remote, name: str) -> str:
    remote.branch(name, {f"dev/{name}/main.tf": f"# {name}\n"})
    remote.work.git("merge", "-q", "--no-ff", "-m", f"Merge {name}", name)
    return remote.sha("main")


def test_deploy_branch_burst_of_merges_gives_one_run_per_merge_in_order(remote):
    res = resources(remote.bare)
    runs, cursor, skip = tick(deploy_sensor, res)
    assert runs == [] and "recorded" in skip  # first look: history is not applied
    assert json.loads(cursor) == {"branch": "main", "sha": remote.main0}

    merges = [merge(remote, f"m{i}") for i in range(3)]
    remote.push("main:refs/heads/main")
    runs, cursor, _ = tick(deploy_sensor, res, cursor)
    assert [r.run_key for r in runs] == [f"push-{m}" for m in merges]  # merge commits only (first parent)
    configs = [orchestrate_config(r) for r in runs]
    assert [(c["base_ref"], c["head_ref"]) for c in configs] == [
        (remote.main0, merges[0]), (merges[0], merges[1]), (merges[1], merges[2])]
    assert all("pr_number" not in c for c in configs) and {r.tags["pipelines/event"] for r in runs} == {"push"}
    assert {r.tags["pipelines/apply-lock"] for r in runs} == {sensors.run_requests.repo_identity(str(remote.bare))}
    assert json.loads(cursor)["sha"] == merges[2]

    assert tick(deploy_sensor, res, cursor)[0] == []  # no repeats
    m3 = merge(remote, "m3")
    remote.push("main:refs/heads/main")
    runs, _, _ = tick(deploy_sensor, res, cursor)
    assert [(orchestrate_config(r)["base_ref"], orchestrate_config(r)["head_ref"]) for r in runs] == [
        (merges[2], m3)]


def test_no_run_a_sensor_asks_for_chooses_its_identity(remote):
    """On Kubernetes the apply identity is the apply code location's (deploy/): no run request carries pod
    configuration, which the run launcher's allowlist would refuse anyway."""
    res = resources(remote.bare)
    _, cursor, _ = tick(deploy_sensor, res)
    merge(remote, "k8s")
    remote.push("main:refs/heads/main")
    [apply], _, _ = tick(deploy_sensor, res, cursor)
    remote.branch("feature", {"dev/f/main.tf": "# f\n"})
    remote.push("feature:refs/heads/feature")
    plans, _, _ = tick(pr_sensor, res)  # local mode: every branch but main is a change request
    assert plans and not [r for r in [apply, *plans] if any(k.startswith("dagster-k8s") for k in r.tags)]


def test_deploy_branch_long_burst_is_split_across_ticks_without_gaps(remote):
    deploy_sensor = sensors.make_deploy_branch_sensor(APPLY_JOB, Settings(max_push_runs_per_tick=2))
    res = resources(remote.bare)
    _, cursor, _ = tick(deploy_sensor, res)
    commits = [remote.work.commit({"dev/a/main.tf": f"# a{i}\n"}) for i in range(3)]
    remote.push("main:refs/heads/main")
    first, cursor, _ = tick(deploy_sensor, res, cursor)
    second, cursor, _ = tick(deploy_sensor, res, cursor)
    heads = [orchestrate_config(r)["head_ref"] for r in first + second]
    bases = [orchestrate_config(r)["base_ref"] for r in first + second]
    assert (len(first), len(second)) == (2, 1)
    assert heads == commits and bases == [remote.main0] + commits[:2]


def test_rewritten_deploy_branch_gives_one_run_from_where_the_histories_part(remote):
    res = resources(remote.bare)
    applied = remote.work.commit({"dev/a/main.tf": "# a1\n"})
    remote.push("main:refs/heads/main")
    _, cursor, _ = tick(deploy_sensor, res)
    remote.work.git("reset", "-q", "--hard", remote.main0)
    new = remote.work.commit({"dev/a/main.tf": "# a2\n"})
    remote.push("main:refs/heads/main")
    runs, cursor, _ = tick(deploy_sensor, res, cursor)
    # never from the old tip, which the deploy branch no longer has: from the last commit both histories share
    assert [(orchestrate_config(r)["base_ref"], orchestrate_config(r)["head_ref"]) for r in runs] == [
        (remote.main0, new)]
    assert runs[0].tags[run_requests.TAG_REPLACED_TIP] == applied  # the run reports the rewrite
    later = remote.work.commit({"dev/a/main.tf": "# a3\n"})
    remote.push("main:refs/heads/main")
    runs, _, _ = tick(deploy_sensor, res, cursor)
    assert [(orchestrate_config(r)["base_ref"], r.tags.get(run_requests.TAG_REPLACED_TIP)) for r in runs] == [
        (new, None)]
    assert orchestrate_config(runs[0])["head_ref"] == later


# ------------------------------------------------------------------------------------------ crashed runs


def run_job(remote: Remote, event: str, base: str, head: str, pr: int | None, tags: dict, instance):
    config = {"base_ref": base, "head_ref": head, **({"pr_number": pr} if event == "pull_request" else {})}
    return run_in_process(event, {"ops": {"orchestrate": {"config": config}}}, instance=instance, tags=tags,
                          environment={"PIPELINES_REPO_URL": str(remote.bare), "PIPELINES_GITHUB_REPO": ""})


def failure_tick(result, instance, res: dict):
    context = dg.build_run_status_sensor_context(
        sensor_name=failure_sensor.name, dagster_event=result.get_run_failure_event(), dagster_instance=instance,
        dagster_run=result.dagster_run, resources=res).for_run_failure()
    failure_sensor(context)


def test_run_crashed_in_orchestrate_is_reported_on_its_pull_request(remote, github):
    number, sha = open_pull_request(remote, github, "feature", {"dev/b/main.tf": "# b\n"})
    with dg.instance_for_test() as instance:
        result = run_job(remote, "pull_request", "no-such-branch", sha, number,
                         {"pipelines/pr": str(number), "pipelines/sha": sha, "pipelines/event": "pull_request"},
                         instance)
        assert not result.success
        assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"] == ["orchestrate"]
        github.clear_log()
        failure_tick(result, instance, resources(remote.bare, GH_REPO))
    comments = github.comments(GH_REPO, number)
    assert len(comments) == 1
    body = comments[0]["body"]
    assert "crashed" in body and "orchestrate" in body and "no-such-branch" in body
    assert f"{UI}/runs/{result.run_id}" in body
    assert body.startswith(f"<!-- pipelines-dagster:crash={sha} -->")  # beside the plan's comment, never over it
    # a status of its own: a run's tags name its target, so a crash never turns the plan's required status
    assert [(s["context"], s["state"]) for s in github.statuses(GH_REPO, sha)] == [("pipelines-dagster/crash",
                                                                                     "error")]


def test_push_run_crash_opens_an_issue_even_without_sensor_tags(remote, github):
    head = remote.sha("main")
    with dg.instance_for_test() as instance:
        result = run_job(remote, "push", "0" * 40, head, None, {}, instance)  # launched by hand: no tags
        assert not result.success
        failure_tick(result, instance, resources(remote.bare, GH_REPO))
    issues = github.issues(GH_REPO)
    assert len(issues) == 1
    assert head[:12] in issues[0]["title"] and "crashed" in issues[0]["title"]
    assert f"{UI}/runs/{result.run_id}" in issues[0]["body"] and "orchestrate" in issues[0]["body"]


def test_verdict_failure_was_reported_already_and_local_mode_only_logs(remote, github):
    base = remote.sha("main")
    # repository errors (an unusable accounts.yml) make the verdict fail the run after the report
    remote.work.git("checkout", "-q", "-b", "bad")
    head = remote.work.commit({"accounts.yml": "dev: [not, a, mapping\n"})
    remote.push("bad:refs/heads/bad")
    with dg.instance_for_test() as instance:
        verdict = run_job(remote, "pull_request", base, head, 7, {"pipelines/pr": "7", "pipelines/sha": head},
                          instance)
        assert [e.step_key for e in verdict.all_events if e.event_type_value == "STEP_FAILURE"] == ["report"]
        crashed = run_job(remote, "pull_request", "no-such-branch", head, 7, {"pipelines/pr": "7"}, instance)
        github.clear_log()
        failure_tick(verdict, instance, resources(remote.bare, GH_REPO))
        assert github.log == []  # nothing to add: the report op has reported
        failure_tick(crashed, instance, resources(remote.bare))  # local mode: logged only
        assert github.log == []


def test_dagster_yaml_serialises_push_runs_per_repository_only(remote):
    """The run queue's own tag-limit counter, configured from dagster.yaml, on runs shaped by the sensors."""
    from pathlib import Path

    import yaml
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    conf = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    _, cursor, _ = tick(deploy_sensor, resources(remote.bare))
    remote.work.commit({"dev/a/main.tf": "# a1\n"})
    remote.work.commit({"dev/a/main.tf": "# a2\n"})
    remote.push("main:refs/heads/main")
    first, second = tick(deploy_sensor, resources(remote.bare), cursor)[0]
    other_repo = run_requests.push_runs("0" * 40, ["1" * 40], run_requests.repo_identity("acme/other"))[0]
    with dg.instance_for_test(overrides={"run_coordinator": conf["run_coordinator"]}) as instance:
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits

    def run(tags):
        return dg.DagsterRun(job_name=APPLY_JOB.name, tags=dict(tags))

    counter = TagConcurrencyLimitsCounter(limits, [run(first.tags)])
    assert counter.is_blocked(run(second.tags))            # same repository: waits for the running apply
    assert not counter.is_blocked(run(other_repo.tags))    # another repository: runs
    assert not counter.is_blocked(run({"pipelines/pr": "1", "pipelines/event": "pull_request"}))  # plans: run


def test_the_deploy_branch_is_the_deployments_or_the_default_branch_never_a_pushed_file(remote):
    remote.work.commit({".pipelines.yml": "deploy_branch: live\n"})
    remote.work.git("branch", "live", "main")
    remote.push("main:refs/heads/main", "live:refs/heads/live")
    # a push to the default branch naming another deploy branch changes nothing: nothing is applied until the
    # deployment names it
    runs, cursor, skipped = tick(deploy_sensor, resources(remote.bare))
    assert runs == [] and cursor is None and "only the deployment may choose it" in skipped
    pinned = resources_from_settings(Settings.from_env(repo_url=str(remote.bare), deploy_branch="live"))
    assert json.loads(tick(deploy_sensor, pinned)[1])["branch"] == "live"
    # local mode, the deploy branch named by the deployment: main is now a change request against live
    head = remote.work.commit({"dev/z/main.tf": "# z\n"})
    remote.push("main:refs/heads/main")
    runs, _, _ = tick(pr_sensor, pinned)
    assert [(r.run_key, r.tags["pipelines/base-branch"]) for r in runs] == [(f"branch-main-{head}", "live")]


# ------------------------------------------------------------------------------------------------ asset graph


def test_asset_graph_sensor_asks_for_a_reload_only_when_the_deploy_branch_moved(remote):
    res = resources(remote.bare)
    loaded = read_lineage(str(remote.bare))  # what the code location's asset graph was built from
    runs, _, skip = tick(sensors.make_asset_graph_sensor(loaded, "pipelines_dagster", Settings()), res)
    assert runs == [] and skip == f"the asset graph is at main {remote.main0[:12]}"

    moved = remote.work.commit({"dev/b/main.tf": "# b\n"})
    remote.push("main")
    _, _, skip = tick(sensors.make_asset_graph_sensor(loaded, "pipelines_dagster", Settings()), res)
    assert skip == f"main moved to {moved[:12]}; PIPELINES_UI_URL is not set, no reload"
    with socket.socket() as s:  # a port nobody listens on: the webserver is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    _, _, skip = tick(sensors.make_asset_graph_sensor(loaded, "pipelines_dagster", Settings(ui_url=down)), res)
    assert skip.startswith(f"main moved to {moved[:12]}; reload failed: DagsterGraphQLClientError")

    _, _, skip = tick(sensors.make_asset_graph_sensor(Lineage(), "pipelines_dagster", Settings(ui_url=down)), res)
    assert skip == "PIPELINES_REPO_URL is not set: no asset graph to keep up to date"
