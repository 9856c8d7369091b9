"""The embedded default: a demo infrastructure-live, an AWS emulator and `dagster dev` in local mode, all offline.

    python -m pipelines_dagster.demo [--folder .demo] [--port 3000] [--aws-port 0]

The first start creates, under the folder, a bare "remote" (`remote.git`) and a working clone (`live`) holding
the layout of `pipelines_dagster.demo.layout` in two commits (settings, then units), the null provider for
offline `terraform init`, an OIDC token file and a DAGSTER_HOME. Every start runs moto's server on 127.0.0.1
(STS, S3 state buckets and DynamoDB lock tables of each account, created with that account's assumed role) and
puts back the Terraform states saved by the previous stop; the first start applies the units once, with the
pipeline's own `run` command. Then `dagster dev` runs with the sensors watching the remote: push a branch for a
plan, push `main` for an apply. Ctrl-C (or SIGTERM, SIGHUP) stops `dagster dev` and its whole process group,
saves the states under `<folder>/aws-states` and stops the emulator, and the demo exits 0.

One demo per folder (`lock`): a second start on a folder in use exits at once, naming the running one. The
terminal stays quiet (`terminal`): `dagster dev`'s output goes to `<folder>/logs/dagster.log`, the terminal gets
the addresses, a line per run started and finished, errors, and one line at the stop. The states are saved after
every finished run too, never going back to an older one (`aws.Aws.save_states`).
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..core.isolation.environment import AMBIENT_AWS_ENV
from . import layout
from .aws import REGION, UNVERIFIED_TOKEN, Aws, MotoServer, backend_config_args, write_atomically
from .lock import FolderInUse, hold
from .terminal import Console, DagsterOutput, RunFollower, duration, foreground, quiet_warnings
from .terraform import install_null_provider, write_cli_config

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SENSOR_INTERVAL_S = "10"  # the demo's sensors look every 10 s (the default is 30)
STOP_GRACE_S = 15
GONE = (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError)


@dataclass(frozen=True)
class Demo:
    """The demo's files under one folder."""

    folder: Path

    @property
    def remote(self) -> Path:
        return self.folder / "remote.git"

    @property
    def work(self) -> Path:
        return self.folder / "live"

    @property
    def home(self) -> Path:
        return self.folder / "dagster_home"

    @property
    def states(self) -> Path:
        return self.folder / "aws-states"

    @property
    def token(self) -> Path:
        return self.folder / "oidc-token"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def dagster_log(self) -> Path:
        """`dagster dev`'s output (the previous start's in dagster.log.1)."""
        return self.logs / "dagster.log"

    @property
    def info_file(self) -> Path:
        return self.folder / "demo.json"

    def info(self) -> dict:
        return json.loads(self.info_file.read_text())

    def record(self, **values) -> None:
        write_atomically(self.info_file, (json.dumps({**self.info(), **values}, indent=2) + "\n").encode())


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="demo", GIT_AUTHOR_EMAIL="demo@example.com",
               GIT_COMMITTER_NAME="demo", GIT_COMMITTER_EMAIL="demo@example.com")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def _commit(work: Path, files: dict[str, str], message: str) -> str:
    for rel, content in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(content)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", message)
    return _git(work, "rev-parse", "HEAD")


def create(folder: Path) -> Demo:
    """The demo's files; the repositories only once (a creation cut short is started over)."""
    demo = Demo(folder.resolve())
    demo.folder.mkdir(parents=True, exist_ok=True)
    install_null_provider(demo.folder / "plugins")
    write_cli_config(demo.folder / "terraformrc")
    demo.token.write_text(UNVERIFIED_TOKEN + "\n")
    demo.token.chmod(0o600)  # units run as other users: they must not read it
    demo.home.mkdir(exist_ok=True)
    demo.logs.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", demo.home / "dagster.yaml")
    if not demo.info_file.exists():
        for partial in (demo.work, demo.remote):
            if partial.exists():
                shutil.rmtree(partial)
        demo.work.mkdir()
        _git(demo.work, "init", "-q", "-b", "main")
        for key, value in (("user.name", "demo"), ("user.email", "demo@example.com"), ("commit.gpgsign", "false")):
            _git(demo.work, "config", key, value)  # commits in the walk-through work without a global identity
        base = _commit(demo.work, layout.settings_files(), "Accounts and configuration")
        head = _commit(demo.work, layout.unit_files(), "Units: a DNS zone, and a network and an app per environment")
        _git(demo.folder, "clone", "-q", "--bare", str(demo.work), str(demo.remote))
        _git(demo.work, "remote", "add", "origin", str(demo.remote))
        _git(demo.work, "fetch", "-q", "origin")
        _git(demo.work, "branch", "-q", "--set-upstream-to=origin/main", "main")
        demo.info_file.write_text(json.dumps({"base": base, "head": head, "applied": False}, indent=2) + "\n")
    return demo


def environment(demo: Demo, aws_endpoint: str, port: int, base: dict | None = None) -> dict:
    """`dagster dev`'s environment: local mode on the demo remote, OIDC through the emulator's STS."""
    if demo.token.exists():
        demo.token.chmod(0o600)  # a demo made before the token was its owner's alone
    env = dict(os.environ if base is None else base)
    for var in ("PIPELINES_GITHUB_REPO", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", *AMBIENT_AWS_ENV):
        env.pop(var, None)
    env.setdefault("PIPELINES_SENSOR_INTERVAL_S", SENSOR_INTERVAL_S)
    env.update({
        "DAGSTER_HOME": str(demo.home),
        "PIPELINES_REPO_URL": f"file://{demo.remote}",
        "PIPELINES_UI_URL": f"http://127.0.0.1:{port}",
        "PIPELINES_TF_PLUGIN_DIR": str(demo.folder / "plugins"),
        "PIPELINES_CACHE_DIR": str(demo.folder / "cache"),
        "PIPELINES_WEB_IDENTITY_TOKEN_FILE": str(demo.token),
        "AWS_ENDPOINT_URL": aws_endpoint,  # boto3 (STS for the units' roles)
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "TF_CLI_ARGS_init": backend_config_args(aws_endpoint),  # Terraform 1.0.3's s3 backend
        "PIPELINES_UNIT_ENV": f"{env.get('PIPELINES_UNIT_ENV', '')} TF_CLI_ARGS_init",  # units get it by name only
        "TF_CLI_CONFIG_FILE": str(demo.folder / "terraformrc"),
        "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        "PYTHONWARNINGS": quiet_warnings(env),
    })
    return env


def initial_apply(demo: Demo, env: dict, console: Console) -> bool:
    """Applies the demo's units once, as a push of the units' commit would (a run in the UI's history too);
    whether it ran now."""
    info = demo.info()
    if info.get("applied"):
        return False
    log = demo.logs / "initial-apply.log"
    console.say(f"applying the demo units once (about a minute; output in {log})")
    with log.open("w") as out:
        code = subprocess.run([str(VENV_BIN / "pipelines-dagster"), "run", "--repo", env["PIPELINES_REPO_URL"],
                               "--event", "push", "--base", info["base"], "--head", info["head"]],
                              env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code == 0:
        demo.record(applied=True)
        console.say("applied the demo units")
    else:
        console.say(f"the initial apply failed (exit {code}); see {log} and the run in the UI. The next start tries "
                    "again.", error=True)
    return True


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def leftovers(demo: Demo) -> list[psutil.Process]:
    """Processes of an earlier demo of this folder that outlived it (it was killed with SIGKILL, say): whatever
    runs with this folder's DAGSTER_HOME. Only called with the folder's lock held, so none is a live demo's."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with suppress(*GONE):
            if process.environ().get("DAGSTER_HOME") == str(demo.home):
                found.append(process)
    return found


def stop_leftovers(demo: Demo, grace_s: float = 5) -> int:
    """Stops what `leftovers` finds, and their descendants; how many processes."""
    found = leftovers(demo)
    for process in list(found):
        with suppress(*GONE):
            found.extend(p for p in process.children(recursive=True) if p not in found)
    for process in found:
        with suppress(*GONE):
            process.send_signal(signal.SIGINT)
    for process in _still_running(found, grace_s):
        with suppress(*GONE):
            process.kill()
    _still_running(found, grace_s)
    return len(found)


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In `dagster dev`'s process, before it starts: SIGINT (its clean shutdown) when the demo dies, even by
    SIGKILL, so that it does not go on serving a demo whose AWS emulator is gone (Linux; elsewhere the next start
    stops what a killed demo left)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGINT))


def serve(env: dict, port: int, demo: Demo, console: Console, follower: RunFollower | None = None) -> int:
    """`dagster dev` until it exits or we are stopped, its output into the log file; then everything it started
    is stopped. Its working directory is DAGSTER_HOME: from the repository root, which holds a `dagster.yaml`,
    it would warn that this file is not the instance's."""
    log = demo.dagster_log
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))  # the previous start's, kept
    proc = subprocess.Popen([str(VENV_BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)], cwd=demo.home, env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    assert proc.stdout is not None
    output = DagsterOutput(proc.stdout, log, console, env["PIPELINES_UI_URL"])
    output.start()
    if follower is not None:
        follower.start()
    try:
        code = proc.wait()  # returns only when dagster dev stops by itself: Ctrl-C raises here
        console.say(f"dagster dev exited by itself (status {code}); its output is in {log}", error=True)
        return code
    finally:
        _ignore_stop_signals()
        output.quiet = True
        console.stopping()
        if follower is not None:
            follower.stop()
        stop_tree(proc.pid)
        proc.wait()
        output.join(timeout=5)


def stop_tree(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """Stops a process group leader and all its descendants: SIGINT to its group (what Ctrl-C does to `dagster dev`
    in a terminal) and to descendants in groups of their own (a unit's terraform, which stops cleanly on SIGINT),
    then SIGKILL for whatever is left after `grace_s` (dagster dev leaves children behind on SIGTERM)."""
    try:
        leader = psutil.Process(pid)
        tree = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGINT)
    for process in tree[1:]:
        with suppress(*GONE):
            if os.getpgid(process.pid) != pid:
                process.send_signal(signal.SIGINT)
    left = _still_running(tree, grace_s)
    for process in list(left):
        with suppress(*GONE):
            left.extend(process.children(recursive=True))
    for process in left:
        with suppress(*GONE):
            process.kill()
    _still_running(left, grace_s)


def _still_running(processes: list, timeout_s: float) -> list:
    """The processes still running after at most `timeout_s`. A zombie counts as stopped: orphans are reaped by
    init, and not every init does that promptly."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                if process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class Stop(BaseException):
    """SIGTERM or SIGHUP: stop as Ctrl-C does."""


def _stop_quietly(signum, _frame):
    raise Stop(signum)


def _ignore_stop_signals() -> None:
    """During clean-up: a second Ctrl-C must not cut it short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


class States:
    """The emulator's Terraform states, saved after every run that finishes (a demo killed with SIGKILL loses no
    apply) and when the demo stops; one save at a time."""

    def __init__(self, aws: Aws, demo: Demo, console: Console):
        self._aws, self._demo, self._console = aws, demo, console
        self._lock = threading.Lock()
        self._noted: set[str] = set()

    def save(self) -> tuple[int, list[str]]:
        """How many state objects are saved, and what was not saved as it was, and why (each said once)."""
        with self._lock:
            saved = self._aws.save_states(layout.ACCOUNTS.values(), self._demo.states)
            notes = [n for n in saved.notes if n not in self._noted]
            self._noted.update(notes)
        return saved.count, notes

    def save_after_run(self) -> None:
        try:
            _count, notes = self.save()
        except Exception as exc:
            self._console.say(f"the Terraform states could not be saved: {exc}", stamp=True, error=True)
            return
        for note in notes:
            self._console.say(note, stamp=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / ".demo")
    parser.add_argument("--port", type=int, default=3000, help="the Dagster UI's port")
    parser.add_argument("--aws-port", type=int, default=0, help="the AWS emulator's port (default: any free one)")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    try:
        lock = hold(folder, args.port)
    except FolderInUse as exc:
        print(exc, file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started with SIGINT ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):  # so that everything below is stopped on these too
        signal.signal(sig, _stop_quietly)
    try:
        with foreground():
            return _run(folder, args.port, args.aws_port, Console())
    except (KeyboardInterrupt, Stop):  # before anything started
        return 0
    finally:
        os.close(lock)


def _run(folder: Path, port: int, aws_port: int, console: Console) -> int:
    started = time.monotonic()
    demo = create(folder)
    console.say(f"pipelines-dagster demo in {demo.folder}; full logs in {demo.dagster_log}")
    left = stop_leftovers(demo)
    if left:
        console.say(f"stopped {left} process(es) an earlier demo of this folder left running (it was killed)")
    if port_in_use(port):
        console.say(f"port {port} is in use; choose another: make run PORT=...", error=True)
        return 1
    ui = f"http://127.0.0.1:{port}"
    server = MotoServer(aws_port)
    endpoint = server.start()
    states = States(Aws(endpoint), demo, console)
    follower: RunFollower | None = None
    code = 0
    try:
        restored = Aws(endpoint).restore_states(layout.ACCOUNTS.values(), demo.states)
        env = environment(demo, endpoint, port)
        console.say(f"AWS emulator: {endpoint} ({restored} Terraform state(s) restored)")
        initial_apply(demo, env, console)
        from dagster import DagsterInstance

        follower = RunFollower(DagsterInstance.from_config(str(demo.home)), ui, console,
                               on_finished=states.save_after_run)
        console.say(f"Dagster UI: {ui} (starting, about 20 s; Ctrl-C stops everything)\n"
                    f"watching {env['PIPELINES_REPO_URL']} (your clone: {demo.work}): push a branch for a plan, "
                    "push main to apply")
        code = serve(env, port, demo, console, follower) or 1
    except (KeyboardInterrupt, Stop):
        code = 0
    finally:
        _ignore_stop_signals()
        console.stopping()
        try:
            count, notes = states.save()
            saved = "; ".join([f"{count} Terraform state(s) saved in {demo.states}", *notes])
        except Exception as exc:  # the emulator is stopped all the same
            saved = f"the Terraform states could not be saved: {exc}"
        server.stop()
        runs = follower.summary() if follower is not None else "no runs"
        console.say(f"stopped after {duration(time.monotonic() - started)}: {runs}; {saved}", last=True)
    return code
