"""`pipelines-dagster changes`: the contract's output and exit codes, through the real command."""

import json
import subprocess
import sys

import pytest

from tests.livefixture import make_live_repo, unit

CONTRACT_KEYS = ["base", "head", "event", "changes", "warnings", "errors"]
CHANGE_KEYS = ["type", "unit", "account", "action", "triggers", "wave", "depends_on"]


def run_cli(*args, env_cache=None):
    cmd = [sys.executable, "-m", "pipelines_dagster.cli", "changes", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PIPELINES_CACHE_DIR": str(env_cache), "HOME": str(env_cache)})


@pytest.fixture
def live(tmp_path):
    repo = make_live_repo(tmp_path / "live")
    repo.commit({"prod/us-east-1/prod/mysql/terragrunt.hcl": unit("mysql", ["vpc"]) + "# bump\n",
                 "prod/us-east-1/prod/vpc/terragrunt.hcl": unit("vpc") + "# bump\n"})
    return repo


def test_json_output_follows_the_contract(live, tmp_path):
    proc = run_cli("--repo", str(live.path), "--base", "HEAD~1", "--head", "HEAD", "--event", "pull_request",
                   env_cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == CONTRACT_KEYS
    assert out["head"] == live.git("rev-parse", "HEAD") and out["base"] == live.git("rev-parse", "HEAD~1")
    assert out["event"] == "pull_request" and out["warnings"] == [] and out["errors"] == []
    assert [list(c) for c in out["changes"]] == [CHANGE_KEYS, CHANGE_KEYS]
    assert out["changes"][0] == {"type": "ModuleChanged", "unit": "prod/us-east-1/prod/vpc", "account": "prod",
                                 "action": "plan", "triggers": ["prod/us-east-1/prod/vpc/terragrunt.hcl"],
                                 "wave": 0, "depends_on": []}
    assert out["changes"][1]["depends_on"] == ["prod/us-east-1/prod/vpc"] and out["changes"][1]["wave"] == 1


def test_table_format(live, tmp_path):
    proc = run_cli("--repo", str(live.path), "--base", "HEAD~1", "--head", "HEAD", "--event", "push",
                   "--format", "table", env_cache=tmp_path / "cache")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("push: ") and "2 change(s)" in lines[0]
    assert lines[1].split()[:5] == ["wave", "type", "unit", "account", "action"]
    assert lines[3].split()[:5] == ["0", "ModuleChanged", "prod/us-east-1/prod/vpc", "prod", "apply"]


def test_repository_errors_exit_1_with_errors_in_output(live, tmp_path):
    live.commit({"dev/us-east-1/dev/vpc/terragrunt.hcl": "include {\n"})
    proc = run_cli("--repo", str(live.path), "--base", "HEAD~1", "--head", "HEAD", "--event", "pull_request",
                   env_cache=tmp_path / "cache")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["errors"] and out["errors"][0].startswith("dev/us-east-1/dev/vpc/terragrunt.hcl:")
    assert "Traceback" not in proc.stderr


def test_bad_usage_exits_2(live, tmp_path):
    assert run_cli("--repo", str(live.path), "--base", "HEAD", "--head", "HEAD", "--event", "merge",
                   env_cache=tmp_path / "c").returncode == 2
    proc = run_cli("--repo", str(live.path), "--base", "no-such-ref", "--head", "HEAD", "--event", "push",
                   env_cache=tmp_path / "c")
    assert proc.returncode == 2 and "no-such-ref" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("--repo", str(tmp_path / "nowhere"), "--base", "a", "--head", "b", "--event", "push",
                   env_cache=tmp_path / "c")
    assert proc.returncode == 2 and "not a git repository" in proc.stderr


def test_git_url_is_mirrored_and_fetched(live, tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(live.path), str(remote)], check=True)
    url = f"file://{remote}"
    first = run_cli("--repo", url, "--base", "main~1", "--head", "main", "--event", "push", env_cache=tmp_path / "c")
    assert first.returncode == 0, first.stderr
    assert len(json.loads(first.stdout)["changes"]) == 2
    live.commit({"dev/us-east-1/dev/app/x.tfvars": "a = 1\n"})
    live.git("push", "-q", str(remote), "main")
    second = run_cli("--repo", url, "--base", "main~1", "--head", "main", "--event", "push", env_cache=tmp_path / "c")
    assert [c["unit"] for c in json.loads(second.stdout)["changes"]] == ["dev/us-east-1/dev/app"]


def test_changes_command_does_not_import_dagster(tmp_path):
    code = ("import sys; from pipelines_dagster import cli; import pipelines_dagster.core.orchestrator; "
            "print(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
