"""Git errors never show the credentials of a repository URL: not in GitError, not on the CLI's stderr."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines_dagster.integrations.git import GitError, open_git_dir
from tests.conftest import GitRepo
from tests.githttp import PASSWORD, served, unreachable_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    return tmp_path / "cache"


def test_an_unreachable_remote_with_credentials(cache):
    url = unreachable_url()
    with pytest.raises(GitError) as e:
        open_git_dir(url, cache_root=cache)
    message = str(e.value)
    assert PASSWORD not in message and "alice" not in message
    assert "http://[REDACTED]@127.0.0.1:" in message and "Failed to connect" in message  # still says what failed


def test_a_fetch_that_fails_after_the_mirror_exists(cache, tmp_path):
    work = GitRepo(tmp_path / "work")
    work.commit({"dev/a/main.tf": "# a\n"}, "init")
    bare = tmp_path / "live.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    with served(bare) as url:
        assert (open_git_dir(url, cache_root=cache) / "HEAD").exists()  # mirrored over HTTP, credentials and all
    with pytest.raises(GitError) as e:  # the server is gone: the fetch fails
        open_git_dir(url, cache_root=cache)
    assert PASSWORD not in str(e.value) and "[REDACTED]@127.0.0.1" in str(e.value)
    assert PASSWORD not in repr(e.value)


def test_the_cli_says_what_failed_without_the_password(cache):
    url = unreachable_url()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipelines_dagster.cli", "changes", "--repo", url, "--base", "main~1",
                           "--head", "main", "--event", "pull_request"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    assert PASSWORD not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("pipelines-dagster: http://[REDACTED]@127.0.0.1:")
    assert "Traceback" not in proc.stderr
