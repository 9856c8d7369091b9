"""What a unit's processes may see and do: an allowlisted environment, confined processes, and, when the pipeline
runs as root, a uid of their own.

Code from the repository (providers, external data sources, hooks, local-exec) runs in unit processes and is
hostile. Those processes get only the variables Terraform needs (never a GitHub token, a Dagster or Postgres
setting, an OIDC token variable or any PIPELINES_* setting). `TF_*`, `TG_*` and `TERRAGRUNT_*` variables pass by
name only (PASSED_TF_ENV, and what PIPELINES_UNIT_ENV names): values (`TF_VAR_*`), arguments (`TF_CLI_ARGS*`), the
http backend's credentials (`TF_HTTP_*`) and folders shared between units (`TF_PLUGIN_CACHE_DIR`, `TF_DATA_DIR`)
stay out unless the deployment names them. Registry credentials (`TF_TOKEN_*`, `TG_TF_REGISTRY_TOKEN`, the
`credentials` blocks of the CLI configuration) are for `init` alone, which downloads modules and providers and
runs none of them (Terragrunt's evaluates the unit's configuration: the engine gives them to it for deploy-branch
commits only); later commands get a copy of the CLI configuration that keeps only CLI_CONFIG_KEPT settings. Both
copies are the unit user's alone (0600) in the run folder, and init's is deleted when init ends.

Every unit process starts with PR_SET_NO_NEW_PRIVS (a setuid file cannot raise its privileges) and with limits
on address space, file size, CPU time and, when it runs as a user of its own, the number of that user's
processes (`Confinement`).

When the pipeline is root, units run as an unprivileged user (PIPELINES_UNIT_USER, default a uid of their own from
a range; never uid 0, nor the group root), which can read neither the pipeline's token files nor its processes'
environments (/proc/<pid>/environ of another user's process is refused). That user owns the unit's part of the
run folder; the engine binary, the plugin folder and CA bundles are used in place when it can reach them, else
from read-only copies (root's, cached by content) in a folder it can reach.

A uid of a range is leased to one unit at a time, and only when it is clean: no process runs as it, no run folder
left in the unit space is its, and it owns nothing in the folders every user may write (SHARED_FOLDERS): a unit's
uid can create files only where it may write, which is its own run folder (removed with the run) and those
folders, searched below them wherever a unit could have written (folders of a unit's uid, folders anyone may
write, to a depth of MAX_DEPTH). Files a uid left there (a setuid copy of a shell, say) are removed before it is
leased again, or it is not leased. When a unit ends, every process of its uid is killed.
"""

import contextlib
import ctypes
import hashlib
import json
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
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
PASSED_PREFIXES = ("LC_", "AWS_ENDPOINT_URL")
CLI_CONFIG_VAR = "TF_CLI_CONFIG_FILE"  # passed as copies in the run folder (RunFolder.cli_configs)
# Terraform and Terragrunt variables passed by name: switches that hold no secret and point at no shared folder.
PASSED_TF_ENV = frozenset({
    "TF_LOG", "TF_LOG_CORE", "TF_LOG_PROVIDER", "TF_IN_AUTOMATION", "TF_INPUT", "TF_REGISTRY_DISCOVERY_RETRY",
    "TF_REGISTRY_CLIENT_TIMEOUT", "TG_LOG_LEVEL", "TERRAGRUNT_LOG_LEVEL", "TG_LOG_FORMAT", "TERRAGRUNT_LOG_FORMAT",
    CLI_CONFIG_VAR,
})
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
# Registry credentials: given to `init` alone (registry_credentials), never by name or by the deployment's env.
REGISTRY_CREDENTIALS = frozenset({"TG_TF_REGISTRY_TOKEN"})
REGISTRY_CREDENTIAL_PREFIXES = ("TF_TOKEN_",)
# Files named by these variables must be readable by the unit user: staged when they are not.
STAGED_FILE_VARS = ("SSL_CERT_FILE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# What the CLI configuration of commands after init keeps (matched as Terraform does, ignoring case): no
# `credentials`, `credentials_helper`, nor any setting this list does not know.
CLI_CONFIG_KEPT = frozenset({"provider_installation", "disable_checkpoint", "disable_checkpoint_signature", "host",
                             "providers"})


class IsolationError(Exception):
    """The unit cannot be isolated as configured (unknown user, not root, an unsafe shared folder)."""


def registry_credential(name: str) -> bool:
    return name in REGISTRY_CREDENTIALS or name.startswith(REGISTRY_CREDENTIAL_PREFIXES)


def never_passed(name: str) -> bool:
    return name in NEVER_PASSED or name.startswith(NEVER_PASSED_PREFIXES) or registry_credential(name)


def passed(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a variable of our environment reaches units: the allowlist, plus extra names (`NAME` or `PREFIX*`)."""
    if never_passed(name):
        return False
    if name in PASSED_ENV or name in PASSED_TF_ENV or name.startswith(PASSED_PREFIXES):
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


def registry_credentials(base: Mapping[str, str], settings_env: Mapping[str, str]) -> dict[str, str]:
    """The registry credentials of `base` and the deployment's `settings_env`, for `init` only."""
    return {k: v for k, v in {**base, **settings_env}.items() if registry_credential(k)}


# --------------------------------------------------------------------------------------------- the CLI configuration

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_SCALAR = re.compile(r"[^\s,\]}#]+")


class _Syntax(ValueError):
    pass


def _skip_blank(text: str, i: int) -> int:
    """Past whitespace and comments (`#`, `//`, `/* */`)."""
    while i < len(text):
        if text[i] in " \t\r\n":
            i += 1
        elif text.startswith(("#", "//"), i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _Syntax("an unterminated comment")
            i = end + 2
        else:
            break
    return i


def _string_end(text: str, i: int) -> int:
    """Past the string starting at `i` (HCL1: `${...}` inside may hold quotes)."""
    depth, i = 0, i + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if depth and c == "}":
            depth -= 1
        elif c == '"':
            if not depth:
                return i + 1
            i = _string_end(text, i)
            continue
        elif c == "\n" and not depth:
            break
        i += 1
    raise _Syntax("an unterminated string")


def _heredoc_end(text: str, i: int) -> int:
    match = _HEREDOC.match(text, i)
    if match is None:
        raise _Syntax("a malformed heredoc")
    indented, i = match.group().startswith("<<-"), match.end()
    while i < len(text):
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        line = text[i:end].rstrip("\r")
        if (line.strip() if indented else line) == match.group(1):
            return end
        i = end + 1
    raise _Syntax("an unterminated heredoc")


def _value_end(text: str, i: int) -> int:
    """Past the value (a string, heredoc, block, list or scalar) starting at `i`."""
    if text.startswith('"', i):
        return _string_end(text, i)
    if text.startswith("<<", i):
        return _heredoc_end(text, i)
    if not text.startswith(("{", "["), i):
        match = _SCALAR.match(text, i)
        if match is None:
            raise _Syntax("a missing value")
        return match.end()
    closing: list[str] = []
    while i < len(text):
        c = text[i]
        if c in "{[":
            closing.append("}" if c == "{" else "]")
            i += 1
        elif c in "}]":
            if not closing or closing.pop() != c:
                raise _Syntax(f"an unbalanced {c!r}")
            i += 1
            if not closing:
                return i
        elif c == '"':
            i = _string_end(text, i)
        elif text.startswith("<<", i):
            i = _heredoc_end(text, i)
        elif text.startswith(("#", "//", "/*"), i):
            i = _skip_blank(text, i)
        else:
            i += 1
    raise _Syntax("an unterminated block")


def _top_level_items(text: str) -> Iterator[tuple[str, int, int]]:
    """(key, start, end) of every top-level item of an HCL1 file: `key = value`, `key "label"... { ... }`."""
    i = _skip_blank(text, 0)
    while i < len(text):
        start = i
        if text.startswith('"', i):
            i = _string_end(text, i)
            key = text[start + 1:i - 1]
        else:
            word = _WORD.match(text, i)
            if word is None:
                raise _Syntax(f"an unexpected {text[i]!r}")
            key, i = word.group(), word.end()
        i = _skip_blank(text, i)
        while True:  # labels
            if text.startswith('"', i):
                i = _skip_blank(text, _string_end(text, i))
            elif (label := _WORD.match(text, i)) is not None:
                i = _skip_blank(text, label.end())
            else:
                break
        if text.startswith("=", i):
            i = _skip_blank(text, i + 1)
        elif not text.startswith("{", i):
            raise _Syntax(f"no value for {key!r}")
        end = _value_end(text, i)
        yield key, start, end
        i = _skip_blank(text, end)
        if text.startswith(",", i):
            i = _skip_blank(text, i + 1)


def cli_config_without_credentials(text: str) -> str:
    """A Terraform CLI configuration (HCL1, or JSON) with only its CLI_CONFIG_KEPT settings, each as written.

    The file is the deployment's own, so a careful scan of its top-level items is enough: strings (with HCL1's
    nested interpolation), heredocs, comments and brackets are followed exactly, and anything else is an error
    (ValueError), never a guess."""
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("cannot read it: not a JSON object")
        return json.dumps({k: v for k, v in data.items() if k.lower() in CLI_CONFIG_KEPT}, indent=2) + "\n"
    try:
        kept = [text[start:end] for key, start, end in _top_level_items(text) if key.lower() in CLI_CONFIG_KEPT]
    except _Syntax as exc:
        raise ValueError(f"cannot read it: {exc}") from None
    return "".join(f"{item}\n" for item in kept)


# --------------------------------------------------------------------------------------------- unit processes

PR_SET_NO_NEW_PRIVS = 38
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


@dataclass(frozen=True)
class Confinement:
    """Limits of every process of a unit, each process's own (address space, file size, CPU seconds), and of the
    number of processes (threads included) of its user: None when the unit runs as the pipeline's own user,
    whose count holds the pipeline's processes too."""

    memory_mb: int
    file_mb: int
    cpu_s: int
    processes: int | None = None

    def preexec(self) -> Callable[[], None]:
        """For Popen's preexec_fn: runs in the child after the user switch, before exec. It calls only C functions
        resolved here (setrlimit, prctl) and imports nothing, so no lock another thread of ours held at fork time
        is needed (CPython also takes the import lock around a fork with a preexec_fn). Lowering a limit needs no
        privilege; hard limits equal soft ones, so the unit cannot raise them."""
        wanted = [(resource.RLIMIT_AS, self.memory_mb << 20), (resource.RLIMIT_FSIZE, self.file_mb << 20),
                  (resource.RLIMIT_CPU, self.cpu_s), (resource.RLIMIT_CORE, 0)]  # no core dump of its secrets
        if self.processes is not None:
            wanted.append((resource.RLIMIT_NPROC, self.processes))
        limits = []
        for which, value in wanted:
            hard = resource.getrlimit(which)[1]
            limits.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        setrlimit, prctl = resource.setrlimit, _prctl

        def confine() -> None:
            for which, value in limits:
                setrlimit(which, (value, value))
            if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")

        return confine


# --------------------------------------------------------------------------------------------- the unit user

# Folders every user may write on a Linux system or container image (FHS; /var/lock is usually /run/lock).
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock", "/var/lock")
MAX_DEPTH = 64


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

    def end_processes(self) -> None:
        """SIGKILL to every process of a leased uid (no one else runs as it), sent by a process of that uid
        (kill(-1) as it reaches exactly its processes, at once); then waits a little for them to be gone."""
        uid = self.uid

        def kill_all() -> None:
            if os.getuid() == uid and os.geteuid() == uid:  # never as anyone else
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)

        assert self.lease is not None, "only a leased uid is nobody else's"
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # what survives keeps the uid taken
            subprocess.run(["/bin/sh", "-c", ":"], preexec_fn=kill_all, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **self.popen_args())
        deadline = time.monotonic() + 2
        while uid in _uids_in_use() and time.monotonic() < deadline:
            time.sleep(0.01)

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
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: not a range of uids FIRST-LAST (0 excluded)")
    return int(first), int(last)


def _alive(pid: str) -> bool:
    """Whether a zombie process still has a running thread (its leader exited first)."""
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task.name}/stat", "rb") as fh:
                if fh.read().rpartition(b")")[2].split()[0] != b"Z":
                    return True
    except OSError:
        pass
    return False


def _uids_in_use() -> set[int]:
    """Real uids of the processes alive now (an orphaned unit process keeps its uid taken; a zombie does not)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as fh:
                    zombie = False
                    for line in fh:
                        if line.startswith(b"State:"):
                            zombie = line.split()[1] == b"Z"
                        elif line.startswith(b"Uid:"):
                            if not zombie or _alive(entry.name):
                                found.add(int(line.split()[1]))
                            break
            except OSError:
                continue
    return found


def _run_folder_owners(space: Path) -> set[int]:
    """Owners of the unit parts of the run folders in the unit space (kept ones, or left by a killed pipeline)."""
    owners = set()
    for run in space.glob("pipelines-run-*"):
        for part in ("src", "home", "tmp", "work"):
            with contextlib.suppress(OSError):
                owners.add(os.lstat(run / part).st_uid)
    return owners


def _walk_shared(dir_fd: int, first: int, last: int, remove: int | None, found: set[int], depth: int) -> None:
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        units = first <= st.st_uid <= last
        if units:
            found.add(st.st_uid)
        if st.st_uid == remove:
            with contextlib.suppress(OSError):  # what stays is found again by the next look
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.name, dir_fd=dir_fd)  # by descriptors: no symlink is followed
                else:
                    os.unlink(entry.name, dir_fd=dir_fd)
            continue
        # a unit's uid may have written in its own folders, another unit's, and folders anyone may write
        writable = units or st.st_mode & 0o002 or (st.st_mode & 0o020 and first <= st.st_gid <= last)
        if stat.S_ISDIR(st.st_mode) and writable and depth < MAX_DEPTH:
            try:
                fd = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                _walk_shared(fd, first, last, remove, found, depth + 1)
            finally:
                os.close(fd)


def shared_owners(first: int, last: int, remove: int | None = None) -> set[int]:
    """The uids of [first, last] that own something in the SHARED_FOLDERS; first, with `remove`, what that uid
    owns there is deleted."""
    found: set[int] = set()
    for root in {os.path.realpath(folder) for folder in SHARED_FOLDERS}:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            _walk_shared(fd, first, last, remove, found, 0)
        finally:
            os.close(fd)
    return found


def _cleaned(uid: int, first: int, last: int) -> bool:
    """Whether `uid` owns nothing in the SHARED_FOLDERS, once what it owns there is removed."""
    if uid not in shared_owners(first, last):
        return True
    shared_owners(first, last, remove=uid)
    return uid not in shared_owners(first, last)


def lease_uid(first: int, last: int, space: Path) -> UnitUser:
    """A clean uid of [first, last]: no unit holds it (an exclusive lock on its lease file), no process runs as
    it, no run folder in `space` is its, and it owns nothing in the SHARED_FOLDERS (what it left there is removed
    first; a uid whose files stay is not leased)."""
    import fcntl
    import random

    leases = private_folder(space / "uids", 0o700)
    busy = _uids_in_use() | _run_folder_owners(space)
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
        # again under the lock: another unit may have held the uid since
        if uid in _uids_in_use() | _run_folder_owners(space) or not _cleaned(uid, first, last):
            fh.close()
            continue
        return UnitUser(f"uid {uid}", uid, uid, lease=fh)
    raise IsolationError(f"{UNIT_USER_VAR}={first}-{last}: every uid of the range is in use, or owns files that "
                         f"cannot be removed in {', '.join(SHARED_FOLDERS)}")


def resolve_unit_user(spec: str | None, workdir_root: str | None = None) -> UnitUser | None:
    """The user to switch to for `spec`: a name or a numeric uid, or a range FIRST-LAST from which this unit leases
    a uid of its own (release it with `UnitUser.release`); None when units run as ourselves, which only a pipeline
    that is not root may do. Root (uid 0, or the group root) is refused."""
    root = os.geteuid() == 0
    if not spec:
        if not root:
            return None
        spec = DEFAULT_ROOT_UNIT_USER  # as root, units never run as ourselves
    span = uid_range(spec)
    if span is not None:
        if not root:
            raise IsolationError(f"{UNIT_USER_VAR}={spec}: running units as other users needs the pipeline to run "
                                 f"as root (it runs as uid {os.geteuid()}); unset it to run units as this user")
        probe = UnitUser(f"uid {span[0]}", span[0], span[0])  # any uid of the range reaches the same folders
        return lease_uid(*span, unit_space(workdir_root, probe))
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, ValueError):
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: no such user") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise IsolationError(f"{UNIT_USER_VAR}={spec}: units must not run as root (uid 0) nor with its group: name "
                             f"another user, or a range of uids such as {DEFAULT_ROOT_UNIT_USER}")
    if entry.pw_uid == os.geteuid():  # not root: units run as ourselves
        return None
    if not root:
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
