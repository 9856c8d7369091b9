"""A mirror of a remote URL: processes that fetch it at the same time (a sensor tick, a run, a step) wait for one
another instead of racing to update the same refs. Real git over a file:// URL."""

import subprocess
import sys
from pathlib import Path

from pipelines_dagster.integrations.git import branch_sha, open_git_dir
from tests.conftest import GitRepo

ROOT = Path(__file__).resolve().parents[2]
FETCH = ("import sys; from pathlib import Path; from pipelines_dagster.integrations.git import open_git_dir; "
         "open_git_dir(sys.argv[1], cache_root=Path(sys.argv[2]), refs=['refs/heads/main'])")


def test_fetches_of_one_mirror_by_several_processes_at_once_all_succeed(tmp_path):
    work = GitRepo(tmp_path / "work")
    work.commit({"a.txt": "0\n"}, "init")
    bare = tmp_path / "remote.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    work.git("remote", "add", "origin", str(bare))
    url, cache = f"file://{bare}", tmp_path / "cache"
    mirror = open_git_dir(url, cache_root=cache)
    for round_ in range(5):  # the remote moves, and six processes fetch it at once
        head = work.commit({"a.txt": f"{round_ + 1}\n"}, f"round {round_}")
        work.git("push", "-q", "origin", "main")
        fetches = [subprocess.Popen([sys.executable, "-c", FETCH, url, str(cache)], cwd=ROOT,
                                    stderr=subprocess.PIPE, text=True) for _ in range(6)]
        failed = [p.communicate()[1] for p in fetches if p.wait() != 0]
        assert failed == [], failed
        assert branch_sha(mirror, "main") == head
    refs = subprocess.run(["git", "--git-dir", str(mirror), "for-each-ref", "--format=%(refname)"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert refs == ["refs/heads/main"]  # a mirror holds the remote's branches as its own, nothing else
