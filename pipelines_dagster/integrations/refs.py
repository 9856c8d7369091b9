"""Git refs for the sensors: branch heads, first-parent history, merge bases (plumbing `git`, no Dagster)."""

import subprocess

from .git import GitError, _git_dir


def _git(git_dir, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "--git-dir", _git_dir(git_dir), *args], capture_output=True, text=True)
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


def default_branch(git_dir) -> str | None:
    """The repository's default branch: what HEAD names in a bare repository or mirror (the remote's default
    branch), else the remote's `origin/HEAD`, else `main` or `master` when one exists; None otherwise. A work
    repository's own HEAD (whatever is checked out) is never taken for it."""
    bare = _git(git_dir, "rev-parse", "--is-bare-repository", check=False).stdout.strip() == "true"
    refs = ["HEAD"] if bare else []
    refs.append("refs/remotes/origin/HEAD")
    for ref in refs:
        proc = _git(git_dir, "symbolic-ref", "--quiet", ref, check=False)
        target = proc.stdout.strip()
        for prefix in ("refs/heads/", "refs/remotes/origin/"):
            if proc.returncode == 0 and target.startswith(prefix) and branch_sha(git_dir, target[len(prefix):]):
                return target[len(prefix):]
    return next((b for b in ("main", "master") if branch_sha(git_dir, b)), None)
