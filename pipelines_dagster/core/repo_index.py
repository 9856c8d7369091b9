"""The repository graph at one commit: units, what each reads, includes and runs, and their dependencies.

Two caches make repeated detection cheap, in a new process too (both under the cache folder, in SQLite):
- file facts by git blob id, so a file is parsed once whatever commit it appears in;
- unit evaluations with the fingerprints of every input they looked at, so a unit is re-evaluated only when
  one of its inputs changed.
"""

import marshal
import sqlite3
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .graph import find_cycles
from .model import UnitKind
from .terragrunt import parse
from .terragrunt.paths import TERRAGRUNT_FILE, config_file, rel_dir
from .terragrunt.traversal import Problem, UnitEval, UnitEvaluator
from .terragrunt.tree import TreeView

INDEX_VERSION = 9
SNAPSHOTS_KEPT = 16


NON_UNIT_FOLDERS = frozenset({"_envcommon", "_templates", "_template", "_modules"})


def _skipped_folder(path: str) -> bool:
    """Folders that never hold units: hidden ones (tool caches included), `_envcommon`, `_templates`."""
    return any(part.startswith(".") or part in NON_UNIT_FOLDERS for part in path.split("/")[:-1])


class FactsStore:
    """Parsed file facts by blob id: memory, then SQLite, then tree-sitter."""

    def __init__(self, cache_dir: Path | None):
        self._memory: dict[str, dict] = {}
        self._pending: dict[str, dict] = {}
        self._db: sqlite3.Connection | None = None
        self._loader = None  # callable(list[blob]) -> dict[blob, bytes]
        if cache_dir:  # None or False: memory only
            path = cache_dir / "index.sqlite3"
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
                self._db = self._open(path)
            except sqlite3.DatabaseError:  # a damaged cache is rebuilt, never fatal
                for stale in cache_dir.glob("index.sqlite3*"):
                    stale.unlink()
                self._db = self._open(path)
            except OSError:  # an unwritable cache folder: work without the disk cache
                self._db = None

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS facts (blob TEXT PRIMARY KEY, data BLOB)")
        db.execute("CREATE TABLE IF NOT EXISTS snapshots (tree TEXT PRIMARY KEY, used REAL, data BLOB)")
        db.execute("CREATE TABLE IF NOT EXISTS snapshot_inputs (tree TEXT PRIMARY KEY, data BLOB)")
        return db

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
                    if facts.get("v") == parse.FACTS_VERSION:
                        self._memory[blob] = facts
        missing = [b for b in missing if b not in self._memory]
        if missing and self._loader is not None:
            for blob, content in self._loader(missing).items():
                self._store(blob, parse.parse_facts(content))

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
        """The stored evaluations of the first of `trees` that has one, else of the latest stored tree.

        Inputs (needed only to reuse evaluations for another tree) load on demand: `data["inputs"]()`.
        """
        if self._db is None:
            return None
        row = None
        for tree in trees:
            row = self._db.execute("SELECT tree, data FROM snapshots WHERE tree = ?", (tree,)).fetchone()
            if row:
                break
        if row is None:
            row = self._db.execute("SELECT tree, data FROM snapshots ORDER BY used DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            data = marshal.loads(zlib.decompress(row[1]))
        except (ValueError, EOFError, zlib.error):
            return None
        if data.get("v") != INDEX_VERSION:
            return None
        db, tree = self._db, row[0]

        def inputs() -> dict:
            found = db.execute("SELECT data FROM snapshot_inputs WHERE tree = ?", (tree,)).fetchone()
            return marshal.loads(zlib.decompress(found[0])) if found else {}
        data["inputs"] = inputs
        return data

    def save_snapshot(self, tree: str, data: dict, inputs: dict) -> None:
        if self._db is None:
            return
        blob = zlib.compress(marshal.dumps(data), 1)
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (tree, time.time(), blob))
            self._db.execute("INSERT OR REPLACE INTO snapshot_inputs VALUES (?, ?)",
                             (tree, zlib.compress(marshal.dumps(inputs), 1)))
            self._db.execute("DELETE FROM snapshot_inputs WHERE tree NOT IN (SELECT tree FROM snapshots)")
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
    reads: list[str]
    included: list[str]
    module_dirs: list[str]
    dependencies: dict[str, tuple[str, int | None]]
    conservative: bool
    problems: list[Problem]

    @property
    def config_file(self) -> str:
        return config_file(self.path) if self.kind is UnitKind.TERRAGRUNT else self.path


def _encode(kind: UnitKind, result: UnitEval) -> tuple:
    return (kind.value, sorted(result.reads), sorted(result.included), sorted(result.module_dirs),
            [[k, f, ln] for k, (f, ln) in sorted(result.dependencies.items())], result.conservative,
            [[p.severity, p.file, p.line, p.message] for p in result.problems])


_KINDS = {k.value: k for k in UnitKind}


def _decode(path: str, row) -> UnitInfo:
    kind, reads, included, module_dirs, deps, conservative, problems = row
    return UnitInfo(path, _KINDS[kind], reads, included, module_dirs, {k: (f, ln) for k, f, ln in deps},
                    conservative, [Problem(*p) for p in problems] if problems else [])


class _Units(Mapping):
    """Units by path, decoded from their stored rows on first access."""

    def __init__(self, rows: dict[str, tuple]):
        self._rows = rows
        self._decoded: dict[str, UnitInfo] = {}

    def __getitem__(self, path: str) -> UnitInfo:
        unit = self._decoded.get(path)
        if unit is None:
            unit = self._decoded[path] = _decode(path, self._rows[path])
        return unit

    def __contains__(self, path) -> bool:
        return path in self._rows

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class RepoIndex:
    """Units of one tree and the reverse maps change detection needs."""

    def __init__(self, tree_sha: str, rows: dict[str, tuple], cycles: list[list[str]] | None = None,
                 links: dict | None = None):
        """`links`: the tree's symlinks, as `_links` records them (None when it has none)."""
        self.tree_sha = tree_sha
        links = links or {}
        self._shown_as: dict[str, list[str]] = links.get("shown_as", {})
        self.dir_links: frozenset[str] = frozenset(links.get("dir_links", ()))
        self.link_problems: list[tuple[str, str]] = [tuple(p) for p in links.get("problems", ())]
        included = {f for row in rows.values() for f in row[2]}
        # a terragrunt.hcl that other units include is configuration, not a unit
        self._rows = {p: r for p, r in rows.items() if not (
            r[0] == "terragrunt" and config_file(p) in included)}
        self.units = _Units(self._rows)
        self._deps = {p: [d[0] for d in r[4]] for p, r in self._rows.items()}
        rows_ = self._rows
        self._with_problems = {p for p, r in rows_.items() if r[6]} | {
            p for p, ds in self._deps.items() if ds and any(d not in rows_ for d in ds)}
        self.cycles = cycles if cycles is not None else find_cycles(
            {p: {d for d in ds if d in self._rows} for p, ds in self._deps.items()})
        self._readers: dict[str, set[str]] | None = None
        self._module_users: dict[str, set[str]] | None = None

    def shown_as(self, path: str) -> list[str]:
        """The other paths that show a file through symlinks (to it, or to a folder holding it)."""
        if not self._shown_as:
            return []
        found = []
        current = path
        while True:
            for shown in self._shown_as.get(current, ()):
                found.append(shown + path[len(current):] if current else f"{shown}/{path}")
            if not current:
                return found
            current = rel_dir(current)

    @property
    def conservative(self) -> list[str]:
        return [p for p, r in self._rows.items() if r[5]]

    def dependencies(self, path: str) -> list[str]:
        return self._deps.get(path, [])

    @property
    def dependency_graph(self) -> Mapping[str, list[str]]:
        """Each unit and the paths it depends on (units or not)."""
        return self._deps

    def kind(self, path: str) -> UnitKind:
        return _KINDS[self._rows[path][0]]

    def config_file(self, path: str) -> str:
        return config_file(path) if self._rows[path][0] == "terragrunt" else path

    def module_dirs(self, path: str) -> list[str]:
        return self._rows[path][3]

    def has_problems(self, path: str) -> bool:
        """Problems of its own, or a dependency that is not a unit."""
        return path in self._with_problems

    def owner(self, path: str) -> str | None:
        """The unit whose folder holds `path` (the deepest one when units nest). A unit at the repository root
        owns only the files directly in it, not the whole repository."""
        current = rel_dir(path)
        while True:
            if current in self._rows:
                return current if current or "/" not in path else None
            if not current:
                return None
            current = rel_dir(current)

    def readers(self, path: str) -> set[str]:
        if self._readers is None:
            readers: dict[str, set[str]] = {}
            for unit_path, row in self._rows.items():
                for f in row[1]:
                    readers.setdefault(f, set()).add(unit_path)
            self._readers = readers
        return self._readers.get(path, set())

    def module_users(self, path: str) -> set[str]:
        """Units that run Terraform code from a folder holding `path`."""
        if self._module_users is None:
            users: dict[str, set[str]] = {}
            for unit_path, row in self._rows.items():
                for d in row[3]:
                    users.setdefault(d, set()).add(unit_path)
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

    def build(self, key: str, load_tree, extra_units: list[str], hint_trees: Sequence[str] = (),
              extra_dependencies: dict[str, list[str]] | None = None) -> RepoIndex:
        """The index of the tree `load_tree()` returns (a gitio.Tree); stored evaluations make it cheap.

        `key` names the tree (commit and configuration); `hint_trees` are keys of trees whose evaluations are a
        good starting point (usually the other side of the diff).
        """
        snapshot = self.store.load_snapshot([key, *hint_trees])
        if snapshot is not None and snapshot.get("tree") == key:
            self.stats["reused"] += len(snapshot["units"])
            self.store.touch_snapshot(key)
            return _with_dependencies(key, snapshot["units"], snapshot["cycles"], extra_dependencies,
                                      snapshot.get("links"))
        tree = load_tree()
        view = TreeView(tree.files, tree.dirs, self.store.get)
        cached = snapshot["units"] if snapshot else {}
        cached_inputs = snapshot["inputs"]() if snapshot else {}
        rows: dict[str, tuple] = {}
        inputs: dict[str, dict[str, str]] = {}
        to_eval = []
        for path, kind in self.candidates(tree.files, tree.dirs, extra_units).items():
            row, keys = cached.get(path), cached_inputs.get(path)
            if row is not None and keys is not None and row[0] == kind.value and all(
                    view.fingerprint(k) == fp for k, fp in keys.items()):
                rows[path], inputs[path] = row, keys
            else:
                to_eval.append((path, kind))
        if len(to_eval) > 32:  # one batch beats many single reads
            self.store.prefetch([b for p, b in tree.files.items() if p.endswith((".hcl", ".tf"))])
        for path, kind in to_eval:
            ev = UnitEvaluator(view)
            result = ev.terragrunt_unit(path) if kind is UnitKind.TERRAGRUNT else ev.terraform_unit(path)
            rows[path], inputs[path] = _encode(kind, result), ev.inputs.keys
        self.stats["evaluated"] += len(to_eval)
        self.stats["reused"] += len(rows) - len(to_eval)
        links = _links(tree)
        index = RepoIndex(key, rows, links=links)
        self.store.save_snapshot(key, {"v": INDEX_VERSION, "tree": key, "units": rows, "cycles": index.cycles,
                                       "links": links}, inputs)
        self.store.flush()
        return _with_dependencies(key, rows, index.cycles, extra_dependencies, links)

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


def _links(tree) -> dict | None:
    """What detection needs of a tree's symlinks, storable with its evaluations (None without symlinks)."""
    if not tree.shown_as and not tree.problems:
        return None
    return {"shown_as": tree.shown_as, "dir_links": sorted(tree.dir_links),
            "problems": [list(p) for p in tree.problems]}


def _with_dependencies(key: str, rows: dict[str, tuple], cycles, extra: dict[str, list[str]] | None,
                       links: dict | None = None) -> RepoIndex:
    """Dependencies declared in `.pipelines.yml` (for plain Terraform units) added to the evaluated ones."""
    if not extra:
        return RepoIndex(key, rows, cycles, links)
    rows = dict(rows)
    for unit, deps in extra.items():
        if unit in rows:
            row = rows[unit]
            known = {d[0] for d in row[4]}
            added = [[d, ".pipelines.yml", None] for d in deps if d not in known]
            rows[unit] = row[:4] + (row[4] + added,) + row[5:]
    return RepoIndex(key, rows, links=links)
