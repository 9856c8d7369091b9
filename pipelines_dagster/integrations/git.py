"""Git access through GitPython: open a local repository or a mirror of a remote, read trees, diff, check out."""

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import git

from ..core.repo_index import cache_root


class GitError(Exception):
    """A git operation failed (unknown ref, unreachable remote, ...)."""


def _is_url(location: str) -> bool:
    return "://" in location or location.startswith("git@") or (":" in location and not os.path.exists(location))


def open_repo(location: str, fetch: bool = True) -> git.Repo:
    """A local repository as is, or a bare mirror of a remote URL under the cache (fetched when asked)."""
    if not _is_url(location):
        try:
            return git.Repo(location, search_parent_directories=False)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError) as exc:
            raise GitError(f"{location}: not a git repository") from exc
    mirror = cache_root() / "mirrors" / hashlib.sha256(location.encode()).hexdigest()[:16]
    try:
        if not (mirror / "HEAD").exists():
            mirror.parent.mkdir(parents=True, exist_ok=True)
            return git.Repo.clone_from(location, mirror, mirror=True)
        repo = git.Repo(mirror)
        if fetch:
            repo.git.fetch("--prune", "origin", "+refs/heads/*:refs/heads/*", "+refs/pull/*/head:refs/pull/*/head")
        return repo
    except git.GitCommandError as exc:
        raise GitError(f"{location}: {exc.stderr.strip() or exc}") from exc


def resolve(repo: git.Repo, ref: str) -> str:
    """Full commit sha of a ref, branch, tag or sha; GitError when it does not exist."""
    for candidate in (ref, f"origin/{ref}"):
        try:
            return repo.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}")
        except git.GitCommandError:
            continue
    raise GitError(f"unknown ref {ref!r} in {repo.git_dir}")


@dataclass(frozen=True)
class Tree:
    """A commit's files: path -> blob id, and the set of folders (repo root is '')."""

    sha: str
    files: dict[str, str]
    dirs: frozenset[str]


def read_tree(repo: git.Repo, sha: str) -> Tree:
    out = repo.git.ls_tree("-r", "-z", "--full-tree", sha, strip_newline_in_stdout=False)
    files: dict[str, str] = {}
    dirs = {""}
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, blob = meta.split(" ")
        if kind != "blob":  # submodules (commit) are not files of this repository
            continue
        files[path] = blob
        slash = path.rfind("/")
        while slash > 0:
            parent = path[:slash]
            if parent in dirs:
                break
            dirs.add(parent)
            slash = parent.rfind("/")
    return Tree(sha=sha, files=files, dirs=frozenset(dirs))


def read_blobs(repo: git.Repo, blob_ids: list[str]) -> dict[str, bytes]:
    """Contents of many blobs through one `git cat-file --batch` process."""
    if not blob_ids:
        return {}
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=repo.git_dir, input="\n".join(blob_ids).encode() + b"\n",
                          capture_output=True, check=True)
    data = proc.stdout
    result: dict[str, bytes] = {}
    pos = 0
    for blob in blob_ids:
        header_end = data.index(b"\n", pos)
        header = data[pos:header_end].split(b" ")
        if header[-1] == b"missing":
            pos = header_end + 1
            continue
        size = int(header[2])
        start = header_end + 1
        result[blob] = data[start:start + size]
        pos = start + size + 1
    return result


@dataclass(frozen=True)
class FileChange:
    status: str  # A, M, D, T
    path: str


def diff(repo: git.Repo, base: str, head: str) -> list[FileChange]:
    """Files changed from base to head; renames are a delete plus an add."""
    out = repo.git.diff("--no-renames", "--name-status", "-z", base, head, strip_newline_in_stdout=False)
    parts = [p for p in out.split("\0") if p]
    return [FileChange(parts[i][0], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]


def checkout(repo: git.Repo, sha: str, dest: Path) -> Path:
    """A private working copy of one commit (no .git inside), for running tools without sharing state."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=repo.git_dir, capture_output=True)
    if archive.returncode != 0:
        raise GitError(f"cannot check out {sha}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def is_ancestor(repo: git.Repo, commit: str, of: str) -> bool:
    """True when `commit` is reachable from `of` (e.g. a commit that is on the deploy branch)."""
    try:
        repo.git.merge_base("--is-ancestor", commit, of)
        return True
    except git.GitCommandError:
        return False
