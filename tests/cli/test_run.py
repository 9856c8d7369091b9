"""`pipelines-dagster run`: the same job in-process, persisted to DAGSTER_HOME, exit code from the outcome."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from tests.conftest import null_unit, terraform_binary

ROOT = Path(__file__).resolve().parents[2]


def run_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "pipelines_dagster.cli", "run", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


def test_run_persists_to_dagster_home_and_exits_by_outcome(repo, aws, plugin_dir, tf_cli_config, token_file,
                                                            tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {"PATH": f"{Path(terraform_binary()).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "DAGSTER_HOME": str(home), "PIPELINES_CACHE_DIR": str(tmp_path / "cache"),
           "PIPELINES_TF_PLUGIN_DIR": str(plugin_dir), "PIPELINES_WEB_IDENTITY_TOKEN_FILE": str(token_file),
           "AWS_ENDPOINT_URL": aws.endpoint, "AWS_REGION": "us-east-1", "TF_CLI_CONFIG_FILE": str(tf_cli_config),
           "TMPDIR": str(tmp_path)}
    aws.prepare_account("111111111111")
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({"dev/ok/main.tf": null_unit(aws.endpoint, "dev/ok", count=2)})
    ok = run_cli(env, "--repo", str(repo.path), "--event", "pull_request", "--base", base, "--head", "feature")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert ("| ✅ succeeded | ModuleAdded | `dev/ok` | dev | plan "
            "| 2 to add, 0 to change, 0 to destroy, 1 output change |") in ok.stdout
    repo.commit({"dev/bad/main.tf": null_unit(aws.endpoint, "dev/bad", extra='resource "nope" "x" {}\n')})
    bad = run_cli(env, "--repo", str(repo.path), "--event", "pull_request", "--base", base, "--head", "feature")
    assert bad.returncode == 1
    assert "❌ failed" in bad.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
    unknown = run_cli(env, "--repo", str(repo.path), "--event", "push", "--base", "nope", "--head", "feature")
    assert unknown.returncode == 1 and "unknown ref 'nope'" in unknown.stderr
    assert os.environ.get("DAGSTER_HOME") != str(home)
