"""The tree a unit is evaluated at, and the record of everything one evaluation looked at in it."""

from .paths import config_file, rel_dir


class TreeView:
    """A tree's files and folders, and the facts of its HCL files (through a facts provider)."""

    def __init__(self, files: dict[str, str], dirs, facts_for_blob):
        self.files = files
        self.dirs = dirs
        self._facts_for_blob = facts_for_blob
        self._tf_by_dir: dict[str, list[str]] | None = None

    def facts(self, rel: str) -> dict:
        return self._facts_for_blob(self.files[rel], rel)

    def _index_tf(self) -> dict[str, list[str]]:
        if self._tf_by_dir is None:
            by_dir: dict[str, list[str]] = {}
            for path in self.files:
                if path.endswith(".tf"):
                    by_dir.setdefault(rel_dir(path), []).append(path)
            self._tf_by_dir = by_dir
        return self._tf_by_dir

    def tf_files(self, rel_dir_: str) -> list[str]:
        return self._index_tf().get(rel_dir_, [])

    def tf_fingerprint(self, rel_dir_: str) -> str:
        return ",".join(f"{p}={self.files[p]}" for p in sorted(self.tf_files(rel_dir_)))

    def fingerprint(self, key: str) -> str:
        kind, rel = key[0], key[2:]
        if kind == "f":
            return self.files.get(rel) or ""
        if kind == "d":
            return "1" if rel in self.dirs else ""
        return self.tf_fingerprint(rel)


class Inputs:
    """Everything an evaluation looked at, as key -> fingerprint, so a cached result can be checked for reuse."""

    def __init__(self, view: TreeView):
        self.view = view
        self.keys: dict[str, str] = {}

    def file(self, rel: str) -> str | None:
        blob = self.view.files.get(rel)
        self.keys["f:" + rel] = blob or ""
        return blob

    def isdir(self, rel: str) -> bool:
        exists = rel in self.view.dirs
        self.keys["d:" + rel] = "1" if exists else ""
        return exists

    def tf_files(self, rel_dir_: str) -> list[str]:
        names = self.view.tf_files(rel_dir_)
        self.keys["t:" + rel_dir_] = self.view.tf_fingerprint(rel_dir_)
        return names

    def terragrunt_config(self, target: str) -> str:
        """What read_terragrunt_config() reads for a path: a folder's terragrunt.hcl, or the file itself."""
        return config_file(target) if self.isdir(target) else target
