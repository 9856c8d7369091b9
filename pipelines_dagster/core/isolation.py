"""What a unit's processes may see: an allowlisted environment, and, when the pipeline runs as root, another user.

Code from the repository (providers, external data sources, hooks, local-exec) runs in unit processes and is
hostile. Those processes get only the variables Terraform needs (never a GitHub token, a Dagster or Postgres
setting, an OIDC token variable or any PIPELINES_* setting). When the pipeline is root they also run as an
unprivileged user (PIPELINES_UNIT_USER, default `nobody`), which can read neither the pipeline's token files nor
its processes' environments (/proc/<pid>/environ of another user's process is refused). That user owns the unit's
part of the run folder; the engine binary, the plugin folder and the CLI configuration are used in place when it
can reach them, else from read-only copies (root's, cached by content) in a folder it can reach.
"""

import hashlib
import os
import pwd
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

UNIT_USER_VAR = "PIPELINES_UNIT_USER"
# When root: every unit runs as a uid of its own from this range (no passwd entry needed), so that units running
# at the same time, of other accounts or of an apply, cannot read one another's environments either.
DEFAULT_ROOT_UNIT_USER = "200000-299999"
UNIT_SPACE = "pipelines-units"  # under the work folder (or /tmp): run folders and staged copies

# Passed from our environment to units (besides the deployment's EngineSettings.env and the unit's credentials).
PASSED_ENV = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_EC2_METADATA_DISABLED",
})
PASSED_PREFIXES = ("LC_", "TF_", "TG_", "TERRAGRUNT_", "AWS_ENDPOINT_URL")
# Passed only when the unit has no credentials of its own (it then runs with the ambient ones).
AMBIENT_AWS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
)
# Never given to a unit, whoever asks (PIPELINES_UNIT_ENV, EngineSettings.env): the pipeline's own secrets.
NEVER_PASSED = frozenset({
    "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_RUNTIME_TOKEN",
})
NEVER_PASSED_PREFIXES = ("PIPELINES_", "DAGSTER_")
# Files named by these variables must be readable by the unit user: staged when they are not.
STAGED_FILE_VARS = ("TF_CLI_CONFIG_FILE", "SSL_CERT_FILE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class IsolationError(Exception):
    """The unit cannot be isolated as configured (unknown user, not root, an unsafe shared folder)."""


def never_passed(name: str) -> bool:
    return name in NEVER_PASSED or name.startswith(NEVER_PASSED_PREFIXES)


def passed(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a variable of our environment reaches units: the allowlist, plus extra names (`NAME` or `PREFIX*`)."""
    if never_passed(name):
        return False
    if name in PASSED_ENV or name.startswith(PASSED_PREFIXES):
        return True
    return any(name == e or (e.endswith("*") and name.startswith(e[:-1])) for e in extra if e)


def unit_environment(base: Mapping[str, str], *, extra_names: Iterable[str] = (), settings_env: Mapping[str, str],
                     credentials_env: Mapping[str, str] | None, fixed: Mapping[str, str]) -> dict[str, str]:
    """Allowlisted variables of `base`, the deployment's `settings_env`, the unit's credentials (None: the ambient
    AWS variables instead), then `fixed` (HOME, TMPDIR, non-interactive switches). Secrets never pass."""
    extra_names = list(extra_names)
    env = {k: v for k, v in base.items() if passed(k, extra_names)}
    if credentials_env is None:
        env.update({k: base[k] for k in AMBIENT_AWS_ENV if k in base})
    env.update({k: v for k, v in settings_env.items() if not never_passed(k)})
    if credentials_env:
        env.update(credentials_env)
    env.update(fixed)
    env.setdefault("PATH", os.defpath)
    return env


# --------------------------------------------------------------------------------------------- the unit user


@dataclass
class UnitUser:
    """The user unit processes run as, with no supplementary groups. `lease`: the open lock file that reserves a
    uid of a range for this unit until `release()`."""

    name: str
    uid: int
    gid: int
    lease: IO[str] | None = None

    def popen_args(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def owns(self, path: Path) -> None:
        os.lchown(path, self.uid, self.gid)

    def release(self) -> None:
        if self.lease is not None:
            self.lease.close()  # closing the file drops its lock
            self.lease = None


def default_unit_user() -> str | None:
    """A range of uids, one per unit, when we are root (as in containers); else None: units run as ourselves."""
    return DEFAULT_ROOT_UNIT_USER if os.geteuid() == 0 else None


def uid_range(spec: str | None) -> tuple[int, int] | None:
    """`FIRST-LAST` of PIPELINES_UNIT_USER as numbers, None when it names a single user."""
    first, _, last = (spec or "").partition("-")
    if not (first.isdigit() and last.isdigit()):
        return None
    if not 0 < int(first) <= int(last) < 2**31:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: not a range of uids FIRST-LAST")
    return int(first), int(last)


def _uids_in_use() -> set[int]:
    """Real uids of the processes alive now (an orphaned unit process keeps its uid taken)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as fh:
                    for line in fh:
                        if line.startswith(b"Uid:"):
                            found.add(int(line.split()[1]))
                            break
            except OSError:
                continue
    return found


def lease_uid(first: int, last: int, space: Path) -> UnitUser:
    """A uid of [first, last] that no unit holds (an exclusive lock on its lease file) and no process runs as."""
    import fcntl
    import random

    leases = private_folder(space / "uids", 0o700)
    busy = _uids_in_use()
    size = last - first + 1
    start = random.randrange(size)
    for step in range(min(size, 4096)):
        uid = first + (start + step) % size
        if uid in busy:
            continue
        fh = open(leases / str(uid), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return UnitUser(f"uid {uid}", uid, uid, lease=fh)
    raise IsolationError(f"{UNIT_USER_VAR}={first}-{last}: every uid of the range is in use")


def resolve_unit_user(spec: str | None, workdir_root: str | None = None) -> UnitUser | None:
    """The user to switch to for `spec`: a name or a numeric uid, or a range FIRST-LAST from which this unit leases
    a uid of its own (release it with `UnitUser.release`); None when units run as ourselves."""
    if not spec:
        return None
    span = uid_range(spec)
    if span is not None:
        if os.geteuid() != 0:
            raise IsolationError(f"{UNIT_USER_VAR}={spec}: running units as other users needs the pipeline to run "
                                 f"as root (it runs as uid {os.geteuid()}); unset it to run units as this user")
        probe = UnitUser(f"uid {span[0]}", span[0], span[0])  # any uid of the range reaches the same folders
        return lease_uid(*span, unit_space(workdir_root, probe))
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, ValueError):
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: no such user") from None
    if entry.pw_uid == os.geteuid():
        return None
    if entry.pw_uid == 0:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: units must not run as root")
    if os.geteuid() != 0:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: running units as another user needs the pipeline to run "
                             f"as root (it runs as uid {os.geteuid()}); unset it to run units as this user")
    return UnitUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _permits(st: os.stat_result, user: UnitUser, bits: int) -> bool:
    if st.st_uid == user.uid:
        mode = st.st_mode >> 6
    elif st.st_gid == user.gid:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return mode & bits == bits


def can_reach(path: str | os.PathLike, user: UnitUser, bits: int = 4) -> bool:
    """Whether `user` can open `path` for `bits` (4 read, 1 execute or search): every folder above it searchable."""
    try:
        real = Path(os.path.realpath(path))
        for folder in reversed(real.parents):
            if not _permits(os.stat(folder), user, 1):
                return False
        return _permits(os.stat(real), user, bits)
    except OSError:
        return False


def can_use(path: str | os.PathLike, user: UnitUser) -> bool:
    """Whether `user` can use a file (read it; run it when it is executable) or a whole folder (search every
    folder, read every file, run every executable in it)."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        return can_reach(real, user, 5 if os.access(real, os.X_OK) else 4)
    if not can_reach(real, user, 5):
        return False
    try:
        for top, dirs, files in os.walk(real):
            for name in dirs:
                if not _permits(os.stat(os.path.join(top, name)), user, 5):
                    return False
            for name in files:
                st = os.stat(os.path.join(top, name))
                if not _permits(st, user, 5 if st.st_mode & stat.S_IXUSR else 4):
                    return False
    except OSError:
        return False
    return True


def private_folder(path: Path, mode: int = 0o711) -> Path:
    """A folder of ours that nobody else can write (created when missing); IsolationError when someone else's."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise IsolationError(f"cannot create {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise IsolationError(f"{path} is not a folder of uid {os.geteuid()} that only it can write: refusing to "
                             "run units in it (remove it, or set the work folder elsewhere)")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def unit_space(workdir_root: str | None, user: UnitUser) -> Path:
    """A folder of ours that `user` can reach: the work folder if it can, else /tmp (e.g. when the work folder is
    inside a 0700 folder, as pytest's and a CI clone's are)."""
    for candidate in (workdir_root or tempfile.gettempdir(), "/tmp"):
        if can_reach(candidate, user, 1):
            return private_folder(Path(candidate) / UNIT_SPACE)
    raise IsolationError(f"neither {workdir_root or tempfile.gettempdir()} nor /tmp can be reached by unit user "
                         f"{user.name}")


# --------------------------------------------------------------------------------------------- staging

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


# --------------------------------------------------------------------------------------------- the run folder


@dataclass
class RunFolder:
    """One unit run's private folder. Ours: `logs` (what the commands print, read by us). The unit user's (when
    there is one): `src` (the checkout), `home`, `tmp` and `work` (plan files)."""

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

    @classmethod
    def create(cls, workdir_root: str | None, user: UnitUser | None) -> "RunFolder":
        space = unit_space(workdir_root, user) if user is not None else None
        parent = space if space is not None else workdir_root
        path = Path(tempfile.mkdtemp(prefix="pipelines-run-", dir=parent))
        folder = cls(path, user, space)
        try:
            os.chmod(path, 0o711)
            for sub in (folder.src, folder.home, folder.tmp, folder.work):
                sub.mkdir(mode=0o700)
                if user is not None:
                    user.owns(sub)
            folder.logs.mkdir(mode=0o700)
        except BaseException:
            folder.remove()
            raise
        return folder

    def stage(self, path: str) -> str:
        """A path the unit user can use for `path` (see `staged`)."""
        if self.user is None or self.space is None:
            return path
        return staged(path, self.user, self.space)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.user is not None:
            self.user.release()
