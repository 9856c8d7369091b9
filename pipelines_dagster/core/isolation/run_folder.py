"""One unit run's private folder, and read-only copies of what its user cannot reach."""

import hashlib
import os
import shutil
import stat
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .access import IsolationError, can_use, private_folder, unit_space
from .cli_config import cli_config_without_credentials
from .environment import CLI_CONFIG_VAR
from .users import UnitUser

_hashes: dict[tuple, str] = {}
_hashes_lock = threading.Lock()


def _file_digest(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _hashes_lock:
        known = _hashes.get(key)
    if known is None:
        with open(path, "rb") as fh:
            known = hashlib.file_digest(fh, "sha256").hexdigest()
        with _hashes_lock:
            _hashes[key] = known
    return known


def content_digest(path: Path) -> str:
    """sha256 of a file (with its name), or of a folder's relative paths, executable bits and file contents."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        return hashlib.sha256(f"{os.path.basename(path)}\0{os.access(real, os.X_OK)}\0{_file_digest(real)}"
                              .encode()).hexdigest()
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(real, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(top, name)
            digest.update(f"{os.path.relpath(full, real)}\0{os.access(full, os.X_OK)}\0{_file_digest(full)}\n"
                          .encode())
    return digest.hexdigest()


def _read_only_copy(source: str, target: Path, name: str) -> None:
    if os.path.isdir(source):
        shutil.copytree(source, target, symlinks=False)
        for top, _dirs, files in os.walk(target):
            os.chmod(top, 0o755)
            for name in files:
                full = os.path.join(top, name)
                os.chmod(full, 0o755 if os.stat(full).st_mode & stat.S_IXUSR else 0o644)
    else:  # a file keeps its name: plugin discovery and error messages rely on names
        target.mkdir(mode=0o755)
        shutil.copyfile(source, target / name)
        os.chmod(target / name, 0o755 if os.access(source, os.X_OK) else 0o644)


def staged(path: str, user: UnitUser, space: Path) -> str:
    """`path` itself when `user` can reach it, else a read-only copy of it (root's, by content) under `space`."""
    if can_use(path, user):
        return path
    stage = private_folder(space / "stage", 0o755)
    real = os.path.realpath(path)
    name = os.path.basename(path)
    entry = stage / content_digest(Path(path))[:32]
    if not entry.exists():
        scratch = stage / f".incoming-{uuid.uuid4().hex}"
        try:
            scratch.mkdir(mode=0o755)
            _read_only_copy(real, scratch / "x", name)
            os.rename(scratch / "x", scratch / "ready")
            try:
                os.rename(scratch, entry)  # another process may have staged the same content meanwhile
            except OSError:
                if not entry.exists():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return str(entry / "ready" if os.path.isdir(real) else entry / "ready" / name)






@dataclass
class RunFolder:
    """One unit run's private folder. Ours: `logs` (what the commands print, read by us) and `config` (copies of
    the CLI configuration, each the unit user's alone). The unit user's (when there is one): `src` (the
    checkout), `home`, `tmp` and `work` (plan files)."""

    path: Path
    user: UnitUser | None = None
    space: Path | None = None  # where staged copies go (None: units run as ourselves, nothing is staged)

    @property
    def src(self) -> Path:
        return self.path / "src"

    @property
    def home(self) -> Path:
        return self.path / "home"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def config(self) -> Path:
        return self.path / "config"

    @classmethod
    def create(cls, work_dir: str | None, user: UnitUser | None) -> "RunFolder":
        space = unit_space(work_dir, user) if user is not None else None
        parent = space if space is not None else work_dir
        path = Path(tempfile.mkdtemp(prefix="pipelines-run-", dir=parent))
        folder = cls(path, user, space)
        try:
            os.chmod(path, 0o711)
            for sub in (folder.src, folder.home, folder.tmp, folder.work):
                sub.mkdir(mode=0o700)
                if user is not None:
                    user.owns(sub)
            folder.logs.mkdir(mode=0o700)
            folder.config.mkdir(mode=0o711)  # ours: the unit can read its copies, not replace them
        except BaseException:
            folder.remove()
            raise
        return folder

    def stage(self, path: str) -> str:
        """A path the unit user can use for `path` (see `staged`)."""
        if self.user is None or self.space is None:
            return path
        return staged(path, self.user, self.space)

    def private_file(self, name: str, text: str) -> Path:
        """A file of `config` that only the unit user (or we, without one) can read."""
        path = self.config / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if self.user is not None:
                os.fchown(fd, self.user.uid, self.user.gid)
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return path

    def cli_configs(self, path: str) -> tuple[Path, Path]:
        """Private copies of the Terraform CLI configuration `path`: whole (for init, which deletes it when it
        ends), and without its credentials (`cli_config_without_credentials`, for the other commands)."""
        suffix = ".tfrc.json" if path.endswith(".json") else ".tfrc"
        try:
            text = Path(path).read_text(encoding="utf-8")
            without = cli_config_without_credentials(text)
        except (OSError, ValueError) as exc:
            raise IsolationError(f"the Terraform CLI configuration {path} ({CLI_CONFIG_VAR}): {exc}") from None
        return self.private_file(f"init{suffix}", text), self.private_file(f"commands{suffix}", without)

    def remove(self) -> None:
        if self.user is not None and self.user.lease is not None:
            self.user.end_processes()
        shutil.rmtree(self.path, ignore_errors=True)
        if self.user is not None:
            self.user.release()
