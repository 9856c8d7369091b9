"""`pipelines-dagster execute`: one unit, the way the pipeline runs it, through the real command."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ACCOUNTS, null_unit


def execute(env: dict, *args: str) -> subprocess.CompletedProcess:
    # the command must not import Dagster: checked in the same interpreter that runs it
    code = ("import sys; from pipelines_dagster.cli import main; rc = main(sys.argv[1:]); "
            "assert not any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules), 'dagster imported'; "
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "execute", *args], capture_output=True, text=True,
                          env=env, timeout=180, cwd=str(Path(__file__).resolve().parents[2]))


def test_execute_plan_prints_the_result_as_json(repo, aws, cli_env):
    head = repo.commit({"dev/cli/main.tf": null_unit(aws.endpoint, "dev/cli", count=4)})

    proc = execute(cli_env, "--repo", str(repo.path), "--ref", "main", "--unit", "dev/cli/", "--action", "plan",
                   "--event", "pull_request", "--pr", "5")

    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout)
    assert out["status"] == "succeeded" and out["exit_code"] == 0
    assert {k: out["summary"][k] for k in ("add", "change", "destroy")} == {"add": 4, "change": 0, "destroy": 0}
    assert isinstance(out["duration_s"], float) and out["duration_s"] > 0
    assert "Plan: 4 to add, 0 to change, 0 to destroy." in out["output"]
    assert out["unit"] == "dev/cli" and out["commit"] == head and out["engine"] == "terraform"
    assert out["role_arn"] == f"arn:aws:iam::{ACCOUNTS['dev']}:role/pipelines-plan"


def test_execute_refuses_the_apply_role_for_a_commit_off_the_deploy_branch(repo, aws, cli_env):
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({"dev/cli/main.tf": null_unit(aws.endpoint, "dev/cli", count=1)})

    proc = execute(cli_env, "--repo", str(repo.path), "--ref", "feature", "--unit", "dev/cli", "--action", "apply",
                   "--event", "push", "--format", "table")

    assert proc.returncode == 1
    assert "status     failed" in proc.stdout
    assert "is not on the deploy branch 'main'" in proc.stdout


def test_execute_bad_usage_exits_2(repo, aws, cli_env, tmp_path):
    unknown_ref = execute(cli_env, "--repo", str(repo.path), "--ref", "no-such-branch", "--unit", "dev/x",
                          "--action", "plan", "--event", "pull_request")
    assert unknown_ref.returncode == 2 and "unknown ref" in unknown_ref.stderr
    no_base = execute(cli_env, "--repo", str(repo.path), "--ref", "main", "--unit", "dev/x",
                      "--action", "destroy", "--event", "push")
    assert no_base.returncode == 2 and "--base is required" in no_base.stderr
    not_a_repo = execute(cli_env, "--repo", str(tmp_path / "nothing"), "--ref", "main", "--unit", "dev/x",
                         "--action", "plan", "--event", "pull_request")
    assert not_a_repo.returncode == 2 and "not a git repository" in not_a_repo.stderr
    bad_action = execute(cli_env, "--repo", str(repo.path), "--ref", "main", "--unit", "dev/x",
                         "--action", "launch", "--event", "pull_request")
    assert bad_action.returncode == 2
    assert os.environ.get("PIPELINES_WEB_IDENTITY_TOKEN_FILE") is None
