"""A commit's files as git holds them: trees (with symlinks followed inside the repository only), blobs, diffs,
and private checkouts that refuse links leaving the repository."""

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .git import GitError, _git


@dataclass(frozen=True)
class Tree:
    """A commit's files: path -> blob id, and the set of folders (repo root is '').

    Symlinks are followed as a checkout would see them (a link to a file has its target's blob, a link to a folder
    shows the folder's files under the link's path); `shown_as` maps each file or folder reached through links to
    the paths that show it, `dir_links` lists the links to folders, and `problems` names the links that are not
    followed: (link, message) for a link that leaves the repository, dangles or loops."""

    sha: str
    files: dict[str, str]
    dirs: frozenset[str]
    shown_as: dict[str, list[str]] = field(default_factory=dict)
    dir_links: frozenset[str] = frozenset()
    problems: list[tuple[str, str]] = field(default_factory=list)


SYMLINK_MODE = "120000"


def read_tree(repo, sha: str) -> Tree:
    files: dict[str, str] = {}
    symlinks: dict[str, str] = {}
    dirs = {""}
    listing = _git(repo, "ls-tree", "-r", "-z", "--full-tree", sha).stdout.decode("utf-8", "surrogateescape")
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        if meta[7:11] != "blob":  # "<mode> blob <id>"; submodules are commits, not files of this repository
            continue
        if meta.startswith(SYMLINK_MODE):
            symlinks[path] = meta[12:]
        else:
            files[path] = meta[12:]
        slash = path.rfind("/")
        while slash > 0:
            parent = path[:slash]
            if parent in dirs:
                break
            dirs.add(parent)
            slash = parent.rfind("/")
    if symlinks:
        return _Symlinks(repo, files, dirs, symlinks).tree(sha)
    return Tree(sha=sha, files=files, dirs=frozenset(dirs))


MAX_SYMLINK_HOPS = 40  # as Linux: symlinks followed to resolve one path
MAX_SYMLINK_TARGET = 4096  # PATH_MAX
MAX_LINKED_PATHS = 100_000  # files, folders and links shown through links to folders


class _NotFollowed(Exception):
    """A symlink that is not followed, and why."""


class _Symlinks:
    """Follows a tree's symlinks inside the repository, physically (as the kernel does: `a/link/..` is the parent
    of the link's target), with bounded work; links to folders show the folder's files under the link."""

    def __init__(self, repo, files: dict[str, str], dirs: set[str], symlinks: dict[str, str]):
        targets = read_blobs(repo, sorted(set(symlinks.values())))
        self.links = {path: targets.get(blob, b"") for path, blob in symlinks.items()}
        self.real_files, self.real_dirs = dict(files), frozenset(dirs)
        self.files, self.dirs = files, dirs
        self.children: dict[str, list[str]] | None = None
        self.shown_as: dict[str, list[str]] = {}
        self.dir_links: set[str] = set()
        self.problems: dict[str, str] = {}
        self.shown = 0  # paths shown through links to folders

    def tree(self, sha: str) -> Tree:
        for link in sorted(self.links):
            self._show(link, link, [])
        return Tree(sha=sha, files=self.files, dirs=frozenset(self.dirs), shown_as=self.shown_as,
                    dir_links=frozenset(self.dir_links), problems=sorted(self.problems.items()))

    def _show(self, link: str, at: str, expanding: list[str]) -> None:
        """Show what the symlink `link` points to at path `at` (the link itself, or where a link to a folder shows
        it); `expanding` are the links to folders being shown around it."""
        try:
            target = self.resolve(link)
        except _NotFollowed as exc:
            self.problems.setdefault(link, str(exc))
            return
        if target in self.real_files:
            self.files[at] = self.real_files[target]
            self.shown_as.setdefault(target, []).append(at)
            return
        if self.shown > MAX_LINKED_PATHS:
            return
        if any(target == "" or k == target or k.startswith(target + "/") for k in (*expanding, link)):
            self.problems.setdefault(link, f"symlink {link} points to {self._raw(link)}, a folder that leads back "
                                           "to it (a loop)")
            return
        if len(expanding) >= MAX_SYMLINK_HOPS:
            self.problems.setdefault(link, f"symlink {link}: more than {MAX_SYMLINK_HOPS} links to folders inside "
                                           "each other")
            return
        if link == at:
            self.dir_links.add(link)
        self.shown_as.setdefault(target, []).append(at)
        self._show_folder(target, at, [*expanding, link])

    def _show_folder(self, folder: str, at: str, expanding: list[str]) -> None:
        if self.children is None:
            self.children = {}
            for path in (*self.real_files, *self.links, *self.real_dirs):
                if path:
                    self.children.setdefault(path.rpartition("/")[0], []).append(path)
        pending = [(folder, at)]
        while pending:
            real, shown = pending.pop()
            self.dirs.add(shown)
            for path in self.children.get(real, ()):
                self.shown += 1
                if self.shown > MAX_LINKED_PATHS:
                    self.problems.setdefault(expanding[-1], f"symlinks to folders show more than "
                                                            f"{MAX_LINKED_PATHS:,} paths; the rest are not read")
                    return
                shown_path = shown + path[len(real):] if real else f"{shown}/{path}"
                if path in self.links:
                    self._show(path, shown_path, expanding)
                elif path in self.real_dirs:
                    pending.append((path, shown_path))
                else:
                    self.files[shown_path] = self.real_files[path]

    def _raw(self, link: str) -> str:
        text = self.links[link].decode("utf-8", "replace")
        return text if len(text) <= 200 else text[:197] + "..."

    def resolve(self, link: str) -> str:
        """The repository path a symlink leads to, following symlinks on the way (at most MAX_SYMLINK_HOPS)."""
        hops = [0]
        return self._follow(link, hops, link)

    def _follow(self, link: str, hops: list[int], origin: str) -> str:
        raw = self.links[link]
        target = raw.decode("utf-8", "surrogateescape")
        if len(raw) > MAX_SYMLINK_TARGET or "\0" in target or not target:
            raise _NotFollowed(f"symlink {origin} has an invalid target ({len(raw):,} bytes)")
        if target.startswith("/"):
            raise _NotFollowed(f"symlink {origin} points outside the repository ({self._raw(origin)})")
        current = link.split("/")[:-1]
        names = target.split("/")
        for i, name in enumerate(names):
            if name in ("", "."):
                continue
            if name == "..":
                if not current:
                    raise _NotFollowed(f"symlink {origin} points outside the repository ({self._raw(origin)})")
                current.pop()
                continue
            current.append(name)
            path = "/".join(current)
            if path in self.links:
                hops[0] += 1
                if hops[0] > MAX_SYMLINK_HOPS:
                    raise _NotFollowed(f"symlink {origin}: more than {MAX_SYMLINK_HOPS} symlinks to follow "
                                       f"({self._raw(origin)}; a loop?)")
                resolved = self._follow(path, hops, origin)
                current = resolved.split("/") if resolved else []
            elif path not in self.real_dirs and (path not in self.real_files or any(n not in ("", ".")
                                                                                   for n in names[i + 1:])):
                raise _NotFollowed(f"symlink {origin} points to {self._raw(origin)}, which does not exist")
        return "/".join(current)


def list_folders(repo, sha: str, folders: list[str]) -> dict[str, str]:
    """Files directly inside some folders of a commit: path -> blob id (cheaper than a whole tree)."""
    specs = [f"{f}/" if f else "." for f in folders]
    out = _git(repo, "ls-tree", "-z", "--full-tree", sha, "--", *specs).stdout.decode("utf-8", "surrogateescape")
    files = {}
    for entry in out.split("\0"):
        if entry and entry[7:11] == "blob":
            if entry.startswith(SYMLINK_MODE):  # followed as the whole tree follows it
                wanted = set(folders)
                return {p: b for p, b in read_tree(repo, sha).files.items() if p.rpartition("/")[0] in wanted}
            meta, path = entry.split("\t", 1)
            files[path] = meta[12:]
    return files


def read_blobs(repo, specs: list[str]) -> dict[str, bytes]:
    """Contents of many objects (blob ids or `<commit>:<path>`) through one `git cat-file --batch`."""
    if not specs:
        return {}
    data = _git(repo, "cat-file", "--batch", input="\n".join(specs).encode() + b"\n").stdout
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
    parts = [p for p in _git(repo, "diff", "--no-renames", "--name-status", "-z", base, head).stdout
             .decode("utf-8", "surrogateescape").split("\0") if p]
    return [FileChange(parts[i][0], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]


class UnsafeCheckout(GitError):
    """The commit holds something that must not be checked out (a symlink leaving the repository)."""


def checkout(repo, sha: str, dest: Path, owner: tuple[int, int] | None = None) -> Path:
    """A private working copy of one commit (no .git inside), for running tools without sharing state. With
    `owner` (uid, gid) the files are extracted as that user (and owned by it). A symlink whose target leaves the
    repository is refused (UnsafeCheckout naming it): tools would read what it points to, and print it."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = _git(repo, "archive", "--format=tar", sha, check=False)
    if archive.returncode != 0:
        raise GitError(f"cannot check out {sha}: {archive.stderr.decode(errors='replace').strip()}")
    untar = subprocess.run(["tar", "-x", "--no-same-owner", "-C", str(dest)], input=archive.stdout,
                           capture_output=True, user=owner[0] if owner else None,
                           group=owner[1] if owner else None, extra_groups=[] if owner else None)
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
    out = _git(repo, "ls-tree", "-r", "-z", "--full-tree", sha).stdout.decode("utf-8", "surrogateescape")
    return [entry.split("\t", 1)[1] for entry in out.split("\0") if entry.startswith("120000 ")]
