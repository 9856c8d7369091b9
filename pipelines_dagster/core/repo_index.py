"""The repository graph at one commit: units, what each reads, includes and runs, and their dependencies.

Two caches make repeated detection cheap, in a new process too (both under the cache folder, in SQLite):
- file facts by git blob id, so a file is parsed once whatever commit it appears in;
- unit evaluations with the fingerprints of every input they looked at, so a unit is re-evaluated only when
  one of its inputs changed.
"""

import marshal
import os
import posixpath
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from . import hcl
from .evaluate import TERRAGRUNT_FILE, Problem, TreeView, UnitEval, UnitEvaluator, rel_dir
from .model import UnitKind

INDEX_VERSION = 4
SNAPSHOTS_KEPT = 16


def _skipped_folder(path: str) -> bool:
    """Folders that never hold units: hidden ones, tool caches, `_envcommon`, `_templates` and the like."""
    return any(part.startswith((".", "_")) for part in path.split("/")[:-1])


class FactsStore:
    """Parsed file facts by blob id: memory, then SQLite, then tree-sitter."""

    def __init__(self, cache_dir: Path | None):
        self._memory: dict[str, dict] = {}
        self._pending: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        self._loader = None  # callable(list[blob]) -> dict[blob, bytes]
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(cache_dir / "index.sqlite3", timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS facts (blob TEXT PRIMARY KEY, data BLOB)")
            self._db.execute("CREATE TABLE IF NOT EXISTS snapshots (tree TEXT PRIMARY KEY, used REAL, data BLOB)")

    def set_loader(self, loader) -> None:
        self._loader = loader

    def prefetch(self, blobs: list[str]) -> None:
        """Load facts of many blobs at once: from SQLite, and parse in one batch what is missing."""
        missing = [b for b in dict.fromkeys(blobs) if b not in self._memory]
        if not missing:
            return
        if self._db is not None:
            for start in range(0, len(missing), 900):
                chunk = missing[start:start + 900]
                rows = self._db.execute(f"SELECT blob, data FROM facts WHERE blob IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                for blob, data in rows:
                    facts = marshal.loads(data)
                    if facts.get("v") == hcl.FACTS_VERSION:
                        self._memory[blob] = facts
        missing = [b for b in missing if b not in self._memory]
        if missing and self._loader is not None:
            for blob, content in self._loader(missing).items():
                self._store(blob, hcl.parse_facts(content))

    def _store(self, blob: str, facts: dict) -> None:
        self._memory[blob] = facts
        if self._db is not None:
            self._pending[blob] = facts

    def get(self, blob: str, path: str) -> dict:
        if blob not in self._memory:
            self.prefetch([blob])
        if blob not in self._memory:
            raise KeyError(f"{path}: blob {blob} could not be read")
        return self._memory[blob]

    def flush(self) -> None:
        if self._db is None or not self._pending:
            return
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO facts VALUES (?, ?)",
                                 [(b, marshal.dumps(f)) for b, f in self._pending.items()])
        self._pending.clear()

    # ---- unit evaluation snapshots ----

    def load_snapshot(self, trees: list[str]) -> dict | None:
        """The stored evaluations of the first of `trees` that has one, else of the latest stored tree."""
        if self._db is None:
            return None
        row = None
        for tree in trees:
            row = self._db.execute("SELECT data FROM snapshots WHERE tree = ?", (tree,)).fetchone()
            if row:
                break
        if row is None:
            row = self._db.execute("SELECT data FROM snapshots ORDER BY used DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            data = marshal.loads(zlib.decompress(row[0]))
        except (ValueError, EOFError, zlib.error):
            return None
        return data if data.get("v") == INDEX_VERSION else None

    def save_snapshot(self, tree: str, data: dict) -> None:
        if self._db is None:
            return
        blob = zlib.compress(marshal.dumps(data), 1)
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (tree, time.time(), blob))
            self._db.execute("DELETE FROM snapshots WHERE tree NOT IN "
                             "(SELECT tree FROM snapshots ORDER BY used DESC LIMIT ?)", (SNAPSHOTS_KEPT,))

    def touch_snapshot(self, tree: str) -> None:
        if self._db is not None:
            with self._db:
                self._db.execute("UPDATE snapshots SET used = ? WHERE tree = ?", (time.time(), tree))


@dataclass
class UnitInfo:
    path: str
    kind: UnitKind
    reads: frozenset[str]
    included: frozenset[str]
    module_dirs: frozenset[str]
    dependencies: dict[str, tuple[str, int | None]]
    conservative: bool
    problems: list[Problem]

    @property
    def config_file(self) -> str:
        if self.kind is UnitKind.TERRAGRUNT:
            return posixpath.join(self.path, TERRAGRUNT_FILE) if self.path else TERRAGRUNT_FILE
        return self.path


def _encode(kind: UnitKind, result: UnitEval, inputs: dict[str, str]) -> tuple:
    return (kind.value, sorted(result.reads), sorted(result.included), sorted(result.module_dirs),
            [[k, f, ln] for k, (f, ln) in sorted(result.dependencies.items())], result.conservative,
            [[p.severity, p.file, p.line, p.message] for p in result.problems], inputs)


def _decode(path: str, row) -> UnitInfo:
    kind, reads, included, module_dirs, deps, conservative, problems, _ = row
    return UnitInfo(path, UnitKind(kind), frozenset(reads), frozenset(included), frozenset(module_dirs),
                    {k: (f, ln) for k, f, ln in deps}, conservative, [Problem(*p) for p in problems])


@dataclass
class RepoIndex:
    """Units of one tree and the reverse maps change detection needs."""

    tree_sha: str
    files: dict[str, str]
    units: dict[str, UnitInfo]
    file_problems: list[Problem] = field(default_factory=list)
    _readers: dict[str, set[str]] | None = None
    _module_users: dict[str, set[str]] | None = None

    def owner(self, path: str) -> str | None:
        """The unit whose folder holds `path` (the deepest one when units nest)."""
        current = rel_dir(path)
        while True:
            if current in self.units:
                return current
            if not current:
                return None
            current = rel_dir(current)

    def readers(self, path: str) -> set[str]:
        if self._readers is None:
            readers: dict[str, set[str]] = {}
            for unit in self.units.values():
                for f in unit.reads:
                    readers.setdefault(f, set()).add(unit.path)
            self._readers = readers
        return self._readers.get(path, set())

    def module_users(self, path: str) -> set[str]:
        """Units that run Terraform code from a folder holding `path`, with that folder."""
        if self._module_users is None:
            users: dict[str, set[str]] = {}
            for unit in self.units.values():
                for d in unit.module_dirs:
                    users.setdefault(d, set()).add(unit.path)
            self._module_users = users
        found: set[str] = set()
        current = rel_dir(path)
        while True:
            found |= self._module_users.get(current, set())
            if not current:
                return found
            current = rel_dir(current)


class IndexBuilder:
    """Builds RepoIndex objects for trees of one repository, sharing the caches."""

    def __init__(self, blob_loader, cache_dir: Path | None):
        self.store = FactsStore(cache_dir)
        self.store.set_loader(blob_loader)
        self.stats = {"evaluated": 0, "reused": 0, "parsed_before": 0}

    def close(self) -> None:
        self.store.flush()

    def build(self, tree_sha: str, files: dict[str, str], dirs, extra_units: list[str],
              hint_trees: list[str] = ()) -> RepoIndex:
        view = TreeView(files, dirs, self.store.get)
        candidates = self.candidates(files, dirs, extra_units)
        snapshot = self.store.load_snapshot([tree_sha, *hint_trees])
        cached = snapshot["units"] if snapshot else {}
        fresh = snapshot is not None and snapshot.get("tree") == tree_sha
        rows: dict[str, tuple] = {}
        to_eval = []
        for path, kind in candidates.items():
            row = cached.get(path)
            if row is not None and row[0] == kind.value and (fresh or all(
                    view.fingerprint(k) == fp for k, fp in row[7].items())):
                rows[path] = row
            else:
                to_eval.append((path, kind))
        if len(to_eval) > 32:  # one batch beats many single reads
            self.store.prefetch([b for p, b in files.items() if p.endswith((".hcl", ".tf"))])
        for path, kind in to_eval:
            ev = UnitEvaluator(view)
            result = ev.terragrunt_unit(path) if kind is UnitKind.TERRAGRUNT else ev.terraform_unit(path)
            rows[path] = _encode(kind, result, ev.inputs.keys)
        self.stats["evaluated"] += len(to_eval)
        self.stats["reused"] += len(rows) - len(to_eval)
        if to_eval or not fresh:
            self.store.save_snapshot(tree_sha, {"v": INDEX_VERSION, "tree": tree_sha, "units": rows})
        else:
            self.store.touch_snapshot(tree_sha)
        self.store.flush()
        units = {p: _decode(p, r) for p, r in rows.items()}
        # a terragrunt.hcl that other units include is configuration, not a unit
        included = {f for u in units.values() for f in u.included}
        for path in [p for p, u in units.items()
                     if u.kind is UnitKind.TERRAGRUNT and u.config_file in included]:
            del units[path]
        return RepoIndex(tree_sha, files, units)

    def candidates(self, files: dict[str, str], dirs, extra_units: list[str]) -> dict[str, UnitKind]:
        """Folders that may be units: a terragrunt.hcl, a Terraform backend block, or listed in config."""
        view = TreeView(files, dirs, self.store.get)
        found: dict[str, UnitKind] = {}
        tf_dirs: dict[str, list[str]] = {}
        for path in view.files:
            if _skipped_folder(path):
                continue
            name = path.rsplit("/", 1)[-1]
            if name == TERRAGRUNT_FILE:
                found[rel_dir(path)] = UnitKind.TERRAGRUNT
            elif name.endswith(".tf"):
                tf_dirs.setdefault(rel_dir(path), []).append(path)
        backend_tf = [p for d, ps in tf_dirs.items() if d not in found for p in ps]
        self.store.prefetch([view.files[p] for p in backend_tf])
        for d, paths in tf_dirs.items():
            if d not in found and any(self.store.get(view.files[p], p)["backend"] for p in paths):
                found[d] = UnitKind.TERRAFORM
        for d in extra_units:
            if d not in found and (d in view.dirs):
                found[d] = UnitKind.TERRAFORM
        return found


def cache_root() -> Path:
    """PIPELINES_CACHE_DIR, else the user's cache folder."""
    base = os.environ.get("PIPELINES_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pipelines-dagster")
    return Path(base)


def default_index_cache() -> Path | None:
    """Where parsed facts and unit evaluations are kept; PIPELINES_NO_CACHE=1 turns the disk cache off."""
    if os.environ.get("PIPELINES_NO_CACHE"):
        return None
    return cache_root() / "index"
