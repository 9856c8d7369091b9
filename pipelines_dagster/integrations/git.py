"""All git access: a local repository or a cached mirror of a remote; trees, blobs, diffs, private checkouts,
and the refs the sensors watch (branch heads, first-parent history, merge bases).

Plumbing runs `git` directly, through `_git`: importing GitPython costs the `changes` command about 0.1 s of
start-up. Every function here accepts a GitPython `Repo` or a plain git directory.
"""

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..redact import default_redactor


class GitError(Exception):
    """A git operation failed (unknown ref, unreachable remote, ...). Its message (git's own words and the
    repository's location) is redacted when it is made: credentials in a URL never reach a log, a skip reason or a
    comment."""

    def __init__(self, message: str):
        super().__init__(default_redactor()(message))


def _git_dir(repo) -> str:
    return str(getattr(repo, "git_dir", repo))


DEFAULT_NETWORK_TIMEOUT_S = 45.0  # a fetch inside a sensor tick; a clone gets four times as long


def _git(repo, *args: str, input: bytes | None = None, timeout: float | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """`git --git-dir <repo> <args>`, output as bytes; with `check`, a failure is a GitError in git's words."""
    try:
        proc = subprocess.run(["git", "--git-dir", _git_dir(repo), *args], input=input, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]}: no answer within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc



def _is_url(location: str) -> bool:
    return "://" in location or location.startswith("git@") or (":" in location and not os.path.exists(location))


def open_git_dir(location: str, fetch: bool = True, clone: bool = True, *, cache_root: Path | None = None,
                 timeout_s: float = DEFAULT_NETWORK_TIMEOUT_S, refs: Sequence[str] | None = None) -> Path:
    """The git directory of a local repository, or of a bare mirror of a remote URL under the cache. With
    `clone=False` a remote that has no mirror yet is an error instead of a (possibly long) clone. `refs`: fetch only
    these (full names, `refs/heads/main`) and the remote's default branch, not every branch and pull request head:
    what one branch holds then costs nothing to the others."""
    if not _is_url(location):
        proc = subprocess.run(["git", "-C", location, "rev-parse", "--absolute-git-dir"], capture_output=True,
                              text=True) if os.path.isdir(location) else None
        if proc is None or proc.returncode != 0:
            raise GitError(f"{location}: not a git repository")
        return Path(proc.stdout.strip())
    if cache_root is None:
        raise GitError(f"{location}: a remote needs a cache folder for its mirror (PIPELINES_CACHE_DIR)")
    mirror = cache_root / "mirrors" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if not (mirror / "HEAD").exists():
        if not clone:
            raise GitError(f"{location}: not mirrored under {mirror.parent} yet")
        _create_mirror(location, mirror, timeout_s, refs)
    elif fetch:
        _fetch_mirror(location, mirror, timeout_s, refs)
    return mirror


# Branches and GitHub's pull request heads; never tags, so that no tag can shadow a branch.
MIRROR_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/pull/*/head:refs/pull/*/head")


def _refspecs(mirror: Path, refs: Sequence[str] | None) -> list[str]:
    if refs is None:
        return list(MIRROR_REFSPECS)
    default = _git(mirror, "symbolic-ref", "--quiet", "HEAD", check=False).stdout.decode().strip()
    return [f"+{ref}:{ref}" for ref in dict.fromkeys([*([default] if default else []), *refs])]


@contextmanager
def _fetching(mirror: Path, timeout_s: float) -> Iterator[float]:
    """One fetch of a mirror at a time, across processes (two would race to update the same refs); yields the
    seconds left for the fetch itself."""
    import fcntl

    deadline = time.monotonic() + timeout_s
    with open(mirror / "pipelines-fetch.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GitError(f"git fetch: another fetch of {mirror} is still running after "
                                   f"{timeout_s:.0f} s") from None
                time.sleep(0.05)
        yield max(deadline - time.monotonic(), 1.0)


def _fetch_mirror(location: str, mirror: Path, timeout_s: float, refs: Sequence[str] | None = None) -> None:
    try:
        with _fetching(mirror, timeout_s) as left_s:
            _git(mirror, "fetch", "--quiet", *(["--prune"] if refs is None else []), "--no-tags", "origin",
                 *_refspecs(mirror, refs), timeout=left_s)
    except GitError as exc:
        raise GitError(f"{location}: {exc}") from exc
    tags = _git(mirror, "for-each-ref", "--format=delete %(refname)", "refs/tags/").stdout
    if tags:  # a mirror made by an earlier version (git clone --mirror) still holds the remote's tags
        _git(mirror, "update-ref", "--stdin", input=tags)


def _create_mirror(location: str, mirror: Path, timeout_s: float, refs: Sequence[str] | None = None) -> None:
    """A bare mirror of the remote's branches and pull request heads, its HEAD naming the remote's default branch;
    built in a temporary folder and renamed into place, so an interrupted clone leaves no half mirror."""
    import shutil
    import tempfile

    mirror.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=mirror.name + ".", dir=mirror.parent))
    try:
        _git(building, "init", "--quiet", "--bare")
        _git(building, "config", "remote.origin.url", location)  # no refs/remotes/: a mirror's refs are the remote's
        for refspec in MIRROR_REFSPECS:
            _git(building, "config", "--add", "remote.origin.fetch", refspec)
        _git(building, "config", "remote.origin.tagOpt", "--no-tags")
        try:
            head = _git(building, "ls-remote", "--symref", "origin", "HEAD", timeout=timeout_s).stdout.decode()
            default = next((line.split()[1] for line in head.splitlines() if line.startswith("ref: refs/heads/")),
                           None)
            if default:
                _git(building, "symbolic-ref", "HEAD", default)
            _git(building, "fetch", "--quiet", "--no-tags", "origin", *_refspecs(building, refs),
                 timeout=timeout_s * 4)
        except GitError as exc:
            raise GitError(f"{location}: {exc}") from exc
        try:
            os.rename(building, mirror)
        except OSError:
            if not (mirror / "HEAD").exists():
                raise
            # another process made the mirror meanwhile: use it
    finally:
        shutil.rmtree(building, ignore_errors=True)


_REV_SUFFIX = re.compile(r"^(?P<name>[^~^@:]+)(?P<suffix>[~^@].*)?$")


def resolve(repo, ref: str) -> str:
    """Full commit sha of a sha, a branch, a tag or a revision expression (`main~1`); GitError when it does not
    exist. A name that is a branch (`refs/heads/<name>`, else `refs/remotes/origin/<name>`) always means that
    branch, so a tag named like a branch can never stand for it."""
    match = _REV_SUFFIX.match(ref)
    candidates = [ref]
    if match and not ref.startswith("refs/") and not _SHA.match(match["name"]):
        name, suffix = match["name"], match["suffix"] or ""
        candidates = [f"refs/heads/{name}{suffix}", f"refs/remotes/origin/{name}{suffix}"]
        if not any(_ref_exists(repo, c.removesuffix(suffix)) for c in candidates):
            candidates = [ref]  # a tag, or something else rev-parse understands
    for candidate in candidates:
        try:
            return _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                        f"{candidate}^{{commit}}").stdout.decode().strip()
        except GitError:
            continue
    raise GitError(f"unknown ref {ref!r} in {_git_dir(repo)}")


_SHA = re.compile(r"^[0-9a-f]{40}$")


def _ref_exists(repo, ref: str) -> bool:
    return _git(repo, "show-ref", "--verify", "--quiet", ref, check=False).returncode == 0


def is_ancestor(repo, commit: str, of: str) -> bool:
    """True when `commit` is reachable from `of` (e.g. a commit that is on the deploy branch)."""
    return _git(repo, "merge-base", "--is-ancestor", commit, of, check=False).returncode == 0


# ---- refs the sensors watch


def branch_heads(git_dir) -> dict[str, str]:
    """Every branch (`refs/heads/*`) and its head commit."""
    out = _git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/").stdout.decode()
    heads = {}
    for line in out.splitlines():
        sha, ref = line.split(" ", 1)
        heads[ref[len("refs/heads/"):]] = sha
    return heads


def _is_mirror(git_dir) -> bool:
    """A mirror made by `open_git_dir` (it fetches pull request heads), not a repository of its own."""
    fetched = _git(git_dir, "config", "--get-all", "remote.origin.fetch", check=False).stdout.decode().split()
    return MIRROR_REFSPECS[1] in fetched


def remote_branch_heads(git_dir, timeout_s: float = DEFAULT_NETWORK_TIMEOUT_S) -> dict[str, str]:
    """Every branch of the remote a mirror follows and its head commit, without fetching any (a local repository's
    own branches)."""
    if not _is_mirror(git_dir):
        return branch_heads(git_dir)
    out = _git(git_dir, "ls-remote", "--heads", "origin", timeout=timeout_s).stdout.decode()
    return {ref[len("refs/heads/"):]: sha for sha, ref in (line.split("\t", 1) for line in out.splitlines())}


def fetch(git_dir, refs: Sequence[str], timeout_s: float) -> None:
    """Fetch `refs` (full names) of a mirror's remote; nothing for a local repository."""
    if refs and _is_mirror(git_dir):
        with _fetching(Path(_git_dir(git_dir)), timeout_s) as left_s:
            _git(git_dir, "fetch", "--quiet", "--no-tags", "origin", *(f"+{ref}:{ref}" for ref in refs),
                 timeout=left_s)


def branch_sha(git_dir, branch: str) -> str | None:
    proc = _git(git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def has_commit(git_dir, sha: str) -> bool:
    return _git(git_dir, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def merge_base(git_dir, a: str, b: str) -> str | None:
    """The best common ancestor of two commits, None when they share no history (or one is unknown)."""
    proc = _git(git_dir, "merge-base", a, b, check=False)
    return (proc.stdout.decode().strip() or None) if proc.returncode == 0 else None


def first_parent_commits(git_dir, since: str, until: str) -> list[str]:
    """Commits of `until`'s first-parent line that `since` does not have, oldest first: one per merge (or per
    commit of a squash/rebase merge) on the deploy branch."""
    return _git(git_dir, "rev-list", "--reverse", "--first-parent", f"{since}..{until}").stdout.decode().split()


def on_first_parent_line(git_dir, commit: str, tip: str) -> bool:
    """True when `commit` is `tip` or one of its first-parent ancestors: a commit the branch itself was at (merged
    branches' own commits are not)."""
    if commit == tip:
        return True
    if not is_ancestor(git_dir, commit, tip):
        return False
    line = _git(git_dir, "rev-list", "--first-parent", "--ancestry-path", f"{commit}..{tip}").stdout.decode().split()
    return bool(line) and _git(git_dir, "rev-parse", f"{line[-1]}^1", check=False).stdout.decode().strip() == commit


def fork_point(git_dir, old: str, new: str) -> str | None:
    """The newest commit of `new`'s first-parent line that `old` also has (after a rewrite of a branch from `old` to
    `new`, where the two histories part); None when they share none."""
    line = _git(git_dir, "rev-list", "--first-parent", new, f"^{old}").stdout.decode().split()
    if not line:
        return new  # `old` already has `new`: the branch moved back
    proc = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{line[-1]}^1", check=False)
    return proc.stdout.decode().strip() or None if proc.returncode == 0 else None


def default_branch(git_dir) -> str | None:
    """The repository's default branch: what HEAD names in a bare repository or mirror (the remote's default
    branch), else the remote's `origin/HEAD`, else `main` or `master` when one exists; None otherwise. A work
    repository's own HEAD (whatever is checked out) is never taken for it."""
    bare = _git(git_dir, "rev-parse", "--is-bare-repository", check=False).stdout.decode().strip() == "true"
    refs = ["HEAD"] if bare else []
    refs.append("refs/remotes/origin/HEAD")
    for ref in refs:
        proc = _git(git_dir, "symbolic-ref", "--quiet", ref, check=False)
        target = proc.stdout.decode().strip()
        for prefix in ("refs/heads/", "refs/remotes/origin/"):
            if proc.returncode == 0 and target.startswith(prefix) and branch_sha(git_dir, target[len(prefix):]):
                return target[len(prefix):]
    return next((b for b in ("main", "master") if branch_sha(git_dir, b)), None)
