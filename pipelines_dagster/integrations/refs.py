"""Git refs for the sensors: branch heads, first-parent history, merge bases (plumbing `git`, no Dagster)."""

import subprocess

import yaml

from .git import GitError

DEFAULT_DEPLOY_BRANCH = "main"


def _git(git_dir, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]}: {proc.stderr.strip()}")
    return proc


def branch_heads(git_dir) -> dict[str, str]:
    """Every branch (`refs/heads/*`) and its head commit."""
    out = _git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/").stdout
    heads = {}
    for line in out.splitlines():
        sha, ref = line.split(" ", 1)
        heads[ref[len("refs/heads/"):]] = sha
    return heads


def branch_sha(git_dir, branch: str) -> str | None:
    proc = _git(git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def has_commit(git_dir, sha: str) -> bool:
    return _git(git_dir, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def merge_base(git_dir, a: str, b: str) -> str | None:
    """The best common ancestor of two commits, None when they share no history (or one is unknown)."""
    proc = _git(git_dir, "merge-base", a, b, check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def first_parent_commits(git_dir, since: str, until: str) -> list[str]:
    """Commits of `until`'s first-parent line that `since` does not have, oldest first: one per merge (or per
    commit of a squash/rebase merge) on the deploy branch."""
    out = _git(git_dir, "rev-list", "--reverse", "--first-parent", f"{since}..{until}").stdout
    return out.split()


def configured_deploy_branch(git_dir) -> str:
    """`deploy_branch` of `.pipelines.yml` at HEAD (the remote's default branch in a mirror), else "main"."""
    proc = _git(git_dir, "cat-file", "blob", "HEAD:.pipelines.yml", check=False)
    if proc.returncode != 0:
        return DEFAULT_DEPLOY_BRANCH
    try:
        data = yaml.safe_load(proc.stdout) or {}
    except yaml.YAMLError:
        return DEFAULT_DEPLOY_BRANCH
    branch = data.get("deploy_branch") if isinstance(data, dict) else None
    return branch if isinstance(branch, str) and branch else DEFAULT_DEPLOY_BRANCH
