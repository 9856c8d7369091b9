"""Git access: a local repository or a cached mirror of a remote; trees, blobs, diffs and private checkouts.

Read-only plumbing (rev-parse, ls-tree, cat-file, diff) runs `git` directly: it is three commands, and importing
GitPython costs the `changes` command about 0.1 s of start-up. `open_repo` gives a GitPython `Repo` for the
rest of the pipeline; every function here accepts either that or a plain git directory.
"""

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path



class GitError(Exception):
    """A git operation failed (unknown ref, unreachable remote, ...). Its message (git's own words and the
    repository's location) is redacted when it is made: credentials in a URL never reach a log, a skip reason or a
    comment."""

    def __init__(self, message: str):
        from ..core.redact import default_redactor

        super().__init__(default_redactor()(message))


def _git_dir(repo) -> str:
    return str(getattr(repo, "git_dir", repo))


DEFAULT_NETWORK_TIMEOUT_S = 45.0  # a fetch inside a sensor tick; a clone gets four times as long


def _run(repo, *args: str, input: bytes | None = None, timeout: float | None = None) -> bytes:
    try:
        proc = subprocess.run(["git", "--git-dir", _git_dir(repo), *args], input=input, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]}: no answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise GitError(f"git {args[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _is_url(location: str) -> bool:
    return "://" in location or location.startswith("git@") or (":" in location and not os.path.exists(location))


def open_git_dir(location: str, fetch: bool = True, clone: bool = True, *, cache_root: Path | None = None,
                 timeout_s: float = DEFAULT_NETWORK_TIMEOUT_S) -> Path:
    """The git directory of a local repository, or of a bare mirror of a remote URL under the cache. With
    `clone=False` a remote that has no mirror yet is an error instead of a (possibly long) clone."""
    if not _is_url(location):
        proc = subprocess.run(["git", "-C", location, "rev-parse", "--absolute-git-dir"], capture_output=True,
                              text=True) if os.path.isdir(location) else None
        if proc is None or proc.returncode != 0:
            raise GitError(f"{location}: not a git repository")
        return Path(proc.stdout.strip())
    if cache_root is None:
        from ..settings import Settings

        cache_root = Settings.from_env().cache_root
    mirror = cache_root / "mirrors" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if not (mirror / "HEAD").exists():
        if not clone:
            raise GitError(f"{location}: not mirrored under {mirror.parent} yet")
        _create_mirror(location, mirror, timeout_s)
    elif fetch:
        _fetch_mirror(location, mirror, timeout_s)
    return mirror


# Branches and GitHub's pull request heads; never tags, so that no tag can shadow a branch.
MIRROR_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/pull/*/head:refs/pull/*/head")


def _fetch_mirror(location: str, mirror: Path, timeout_s: float) -> None:
    try:
        _run(mirror, "fetch", "--quiet", "--prune", "--no-tags", "origin", *MIRROR_REFSPECS, timeout=timeout_s)
    except GitError as exc:
        raise GitError(f"{location}: {exc}") from exc
    tags = _run(mirror, "for-each-ref", "--format=delete %(refname)", "refs/tags/")
    if tags:  # a mirror made by an earlier version (git clone --mirror) still holds the remote's tags
        _run(mirror, "update-ref", "--stdin", input=tags)


def _create_mirror(location: str, mirror: Path, timeout_s: float) -> None:
    """A bare mirror of the remote's branches and pull request heads, its HEAD naming the remote's default branch;
    built in a temporary folder and renamed into place, so an interrupted clone leaves no half mirror."""
    import shutil
    import tempfile

    mirror.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=mirror.name + ".", dir=mirror.parent))
    try:
        _run(building, "init", "--quiet", "--bare")
        _run(building, "remote", "add", "origin", location)
        for refspec in MIRROR_REFSPECS:
            _run(building, "config", "--add", "remote.origin.fetch", refspec)
        _run(building, "config", "remote.origin.tagOpt", "--no-tags")
        try:
            _run(building, "fetch", "--quiet", "--no-tags", "origin", timeout=timeout_s * 4)
            head = _run(building, "ls-remote", "--symref", "origin", "HEAD", timeout=timeout_s).decode()
        except GitError as exc:
            raise GitError(f"{location}: {exc}") from exc
        default = next((line.split()[1] for line in head.splitlines() if line.startswith("ref: refs/heads/")), None)
        if default:
            _run(building, "symbolic-ref", "HEAD", default)
        try:
            os.rename(building, mirror)
        except OSError:
            if not (mirror / "HEAD").exists():
                raise
            # another process made the mirror meanwhile: use it
    finally:
        shutil.rmtree(building, ignore_errors=True)


def open_repo(location: str, fetch: bool = True):
    """A GitPython Repo for a local repository or a mirror of a remote URL."""
    import git

    return git.Repo(open_git_dir(location, fetch))


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
            return _run(repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                        f"{candidate}^{{commit}}").decode().strip()
        except GitError:
            continue
    raise GitError(f"unknown ref {ref!r} in {_git_dir(repo)}")


_SHA = re.compile(r"^[0-9a-f]{40}$")


def _ref_exists(repo, ref: str) -> bool:
    return subprocess.run(["git", "--git-dir", _git_dir(repo), "show-ref", "--verify", "--quiet", ref],
                          capture_output=True).returncode == 0


@dataclass(frozen=True)
class Tree:
    """A commit's files: path -> blob id, and the set of folders (repo root is '')."""

    sha: str
    files: dict[str, str]
    dirs: frozenset[str]


def read_tree(repo, sha: str) -> Tree:
    files: dict[str, str] = {}
    dirs = {""}
    for entry in _run(repo, "ls-tree", "-r", "-z", "--full-tree", sha).decode("utf-8", "surrogateescape").split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        if meta[7:11] != "blob":  # "<mode> blob <id>"; submodules are commits, not files of this repository
            continue
        files[path] = meta[12:]
        slash = path.rfind("/")
        while slash > 0:
            parent = path[:slash]
            if parent in dirs:
                break
            dirs.add(parent)
            slash = parent.rfind("/")
    return Tree(sha=sha, files=files, dirs=frozenset(dirs))


def list_folders(repo, sha: str, folders: list[str]) -> dict[str, str]:
    """Files directly inside some folders of a commit: path -> blob id (cheaper than a whole tree)."""
    specs = [f"{f}/" if f else "." for f in folders]
    out = _run(repo, "ls-tree", "-z", "--full-tree", sha, "--", *specs).decode("utf-8", "surrogateescape")
    files = {}
    for entry in out.split("\0"):
        if entry and entry[7:11] == "blob":
            meta, path = entry.split("\t", 1)
            files[path] = meta[12:]
    return files


def read_blobs(repo, specs: list[str]) -> dict[str, bytes]:
    """Contents of many objects (blob ids or `<commit>:<path>`) through one `git cat-file --batch`."""
    if not specs:
        return {}
    data = _run(repo, "cat-file", "--batch", input="\n".join(specs).encode() + b"\n")
    result: dict[str, bytes] = {}
    pos = 0
    for spec in specs:
        header_end = data.index(b"\n", pos)
        header = data[pos:header_end].split(b" ")
        pos = header_end + 1
        if header[-1] == b"missing" or len(header) < 3:
            continue
        size = int(header[2])
        result[spec] = data[pos:pos + size]
        pos += size + 1
    return result


@dataclass(frozen=True)
class FileChange:
    status: str  # A, M, D, T
    path: str


def diff(repo, base: str, head: str) -> list[FileChange]:
    """Files changed from base to head; renames are a delete plus an add."""
    parts = [p for p in _run(repo, "diff", "--no-renames", "--name-status", "-z", base, head)
             .decode("utf-8", "surrogateescape").split("\0") if p]
    return [FileChange(parts[i][0], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]


class UnsafeCheckout(GitError):
    """The commit holds something that must not be checked out (a symlink leaving the repository)."""


def checkout(repo, sha: str, dest: Path, owner: tuple[int, int] | None = None) -> Path:
    """A private working copy of one commit (no .git inside), for running tools without sharing state. With
    `owner` (uid, gid) the files are extracted as that user (and owned by it). A symlink whose target leaves the
    repository is refused (UnsafeCheckout naming it): tools would read what it points to, and print it."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", _git_dir(repo), "archive", "--format=tar", sha],
                             capture_output=True)
    if archive.returncode != 0:
        raise GitError(f"cannot check out {sha}: {archive.stderr.decode(errors='replace').strip()}")
    as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
    untar = subprocess.run(["tar", "-x", "--no-same-owner", "-C", str(dest)], input=archive.stdout,
                           capture_output=True, **as_owner)
    if untar.returncode != 0:
        raise GitError(f"cannot check out {sha}: tar: {untar.stderr.decode(errors='replace').strip()}")
    root = os.path.realpath(dest)
    for link in _symlinks(repo, sha):
        target = os.path.realpath(os.path.join(root, link))
        if target != root and not target.startswith(root + os.sep):
            raise UnsafeCheckout(f"symlink {link} points outside the repository "
                                 f"(-> {os.readlink(os.path.join(root, link))})")
    return dest


def _symlinks(repo, sha: str) -> list[str]:
    out = _run(repo, "ls-tree", "-r", "-z", "--full-tree", sha).decode("utf-8", "surrogateescape")
    return [entry.split("\t", 1)[1] for entry in out.split("\0") if entry.startswith("120000 ")]


def is_ancestor(repo, commit: str, of: str) -> bool:
    """True when `commit` is reachable from `of` (e.g. a commit that is on the deploy branch)."""
    proc = subprocess.run(["git", "--git-dir", _git_dir(repo), "merge-base", "--is-ancestor", commit, of],
                          capture_output=True)
    return proc.returncode == 0
