"""Sensors never show credentials of the repository URL (or of the GitHub API URL): not in skip reasons, not in
the tags or config of the runs they ask for. Real git over HTTP on 127.0.0.1 (tests/githttp.py)."""

import json

import dagster as dg
import pytest

from pipelines_dagster.core.run_requests import repo_identity
from pipelines_dagster.defs import sensors
from pipelines_dagster.defs.jobs import make_apply_job, make_plan_job
from pipelines_dagster.defs.resources import resources_from_settings
from pipelines_dagster.settings import Settings
from tests.conftest import GitRepo
from tests.githttp import PASSWORD, served, unreachable_url, update_server_info

pr_sensor = sensors.make_pull_request_sensor(make_plan_job())
deploy_sensor = sensors.make_deploy_branch_sensor(make_apply_job())


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")


def resources(location: str, deploy_branch: str | None = None, github_repo: str | None = None) -> dict:
    return resources_from_settings(Settings.from_env(repo_url=location, deploy_branch=deploy_branch,
                                                     github_repo=github_repo, github_write_pause_s=0))


def tick(sensor, res: dict, cursor: str | None = None):
    with dg.build_sensor_context(cursor=cursor, resources=res, sensor_name=sensor.name) as context:
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message


@pytest.fixture
def remote(tmp_path):
    work = GitRepo(tmp_path / "work")
    work.commit({".pipelines.yml": "deploy_branch: main\n", "dev/a/main.tf": "# a\n"}, "init")
    bare = tmp_path / "live.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    work.git("remote", "add", "origin", str(bare))
    return work, bare


@pytest.mark.parametrize("sensor", [deploy_sensor, pr_sensor], ids=["deploy branch", "branches (local mode)"])
def test_an_unreachable_remote_is_a_skip_reason_without_the_password(sensor):
    runs, _, skip = tick(sensor, resources(unreachable_url()))
    assert runs == [] and skip.startswith("git: http://[REDACTED]@127.0.0.1:")
    assert PASSWORD not in skip


def test_a_missing_deploy_branch_names_the_remote_without_the_password(remote):
    _, bare = remote
    with served(bare) as url:
        for sensor in (deploy_sensor, pr_sensor):
            _, _, skip = tick(sensor, resources(url, deploy_branch="release"))
            assert skip.startswith("the deploy branch 'release' is not in http://[REDACTED]@127.0.0.1:")
            assert PASSWORD not in skip


def test_apply_runs_of_a_remote_with_credentials_carry_none_in_tags_or_config(remote):
    work, bare = remote
    with served(bare) as url:
        res = resources(url)
        _, cursor, skip = tick(deploy_sensor, res)
        assert "recorded main" in skip
        sha = work.commit({"dev/a/main.tf": "# a, changed\n"}, "change a")
        work.git("push", "-q", "origin", "main")
        update_server_info(bare)
        [run], _, _ = tick(deploy_sensor, res, cursor)
    assert run.tags["pipelines/sha"] == sha
    assert PASSWORD not in json.dumps({"tags": dict(run.tags), "config": run.run_config})
    lock = run.tags["pipelines/apply-lock"]
    assert lock == repo_identity(url.replace("alice:" + PASSWORD + "@", ""))  # one lock, with or without them
    assert "alice" not in lock


def test_a_github_api_url_with_credentials_stays_out_of_the_skip_reason(remote, monkeypatch):
    _, bare = remote
    monkeypatch.setenv("GITHUB_API_URL", unreachable_url().rsplit("/", 1)[0])
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    runs, _, skip = tick(pr_sensor, resources(str(bare), github_repo="acme/infrastructure-live"))
    assert runs == [] and skip.startswith("GitHub: ") and "[REDACTED]@127.0.0.1" in skip
    assert PASSWORD not in skip
