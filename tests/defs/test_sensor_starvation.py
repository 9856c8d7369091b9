"""No branch or pull request can starve the sensors: the deploy-branch sensor fetches only the deploy branch, a
pull request tick runs no git at all, and the local-mode branch tick fetches each new head on its own within the
tick's budget, leaving one that does not fit for later, after the others. A remote over git's smart HTTP protocol
on 127.0.0.1 where fetching the huge branch's commit stalls, as it would on a real link."""

import json

import dagster as dg
import pytest

from pipelines_dagster.definitions import run_in_process
from pipelines_dagster.settings import Settings
from tests.conftest import GitRepo
from tests.defs.conftest import GH_REPO
from tests.defs.test_sensors import deploy_sensor, pr_sensor, resources_from_settings, tick
from tests.githttp import served_stalling

GIT_TIMEOUT_S = 3


class Remote:
    def __init__(self, root):
        self.work = GitRepo(root / "work")
        self.work.commit({".pipelines.yml": "deploy_branch: main\n", "dev/a/main.tf": "# a\n"}, "init")
        self.bare = root / "live.git"
        self.work.git("clone", "-q", "--bare", str(self.work.path), str(self.bare))
        self.work.git("remote", "add", "origin", str(self.bare))

    def branch(self, name: str) -> str:
        self.work.git("checkout", "-q", "-B", name, "main")
        sha = self.work.commit({f"dev/{name}/main.tf": f"# {name}\n"}, f"work on {name}")
        self.work.git("checkout", "-q", "main")
        self.work.git("push", "-q", "origin", f"{name}:refs/heads/{name}")
        return sha

    def merge(self) -> str:
        sha = self.work.commit({"dev/a/main.tf": "# a, again\n"}, "merged")
        self.work.git("push", "-q", "origin", "main:refs/heads/main")
        return sha


@pytest.fixture
def remote(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    return Remote(tmp_path)


def settings_for(url: str, **more) -> dict:
    return resources_from_settings(Settings.from_env(repo_url=url, git_timeout_s=GIT_TIMEOUT_S,
                                                     sensor_tick_budget_s=8, github_write_pause_s=0, **more))


def test_a_huge_branch_does_not_starve_the_deploy_branch_sensor(remote):
    huge = remote.branch("huge")
    with served_stalling(remote.bare, {huge}, stall_s=30) as (url, _):
        res = settings_for(url)
        _, cursor, skipped = tick(deploy_sensor, res)
        assert skipped.startswith("recorded main at")
        merged = remote.merge()
        runs, _, skipped = tick(deploy_sensor, res, cursor)  # before: every branch fetched, the tick timed out
        assert [r.run_key for r in runs] == [f"push-{merged}"], skipped
        # and the run it asks for fetches what it names, not the huge branch
        with dg.instance_for_test() as instance, run_in_process(
                "push", runs[0].run_config, instance=instance, tags=runs[0].tags, environment={
                    "PIPELINES_REPO_URL": url, "PIPELINES_GITHUB_REPO": "",
                    "PIPELINES_GIT_TIMEOUT_S": str(GIT_TIMEOUT_S)}) as result:
            assert result.success
            assert result.output_for_node("orchestrate", "progress").plan.spec.head == merged


def test_a_pull_request_tick_runs_no_git(remote, github):
    with served_stalling(remote.bare, set(), stall_s=0) as (url, seen):
        number = github.add_pull_request(GH_REPO, "feature", head_sha=remote.branch("feature"))
        runs, _, _ = tick(pr_sensor, settings_for(url, github_repo=GH_REPO))
        assert [r.tags["pipelines/pr"] for r in runs] == [str(number)]
        assert seen == []  # nothing fetched: however big a pull request is, the others do not wait for it


def test_local_mode_leaves_a_branch_that_does_not_fit_for_later_after_the_others(remote):
    huge = remote.branch("huge")
    small = remote.branch("small")
    with served_stalling(remote.bare, {huge}, stall_s=30) as (url, _):
        res = settings_for(url)
        runs, cursor, _ = tick(pr_sensor, res)
        assert [r.run_key for r in runs] == [f"branch-small-{small}"]
        state = json.loads(cursor)
        assert state["slow"] == {"huge": huge} and "huge" not in state["branches"]

        later = remote.branch("later")
        runs, cursor, _ = tick(pr_sensor, res, cursor)  # the slow one goes last: the new branch gets its run
        assert [r.run_key for r in runs] == [f"branch-later-{later}"]
        assert json.loads(cursor)["slow"] == {"huge": huge}
