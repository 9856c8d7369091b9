"""The embedded default: a demo infrastructure-live, an AWS emulator and `dagster dev` in local mode, all offline.

    python -m pipelines_dagster.demo [--folder .demo] [--port 3000] [--aws-port 0]

The first start creates, under the folder, a bare "remote" (`remote.git`) and a working clone (`live`) holding
the layout of `pipelines_dagster.demo.layout` in two commits (settings, then units), the null provider for
offline `terraform init`, an OIDC token file and a DAGSTER_HOME. Every start runs moto's server on 127.0.0.1
(STS, S3 state buckets and DynamoDB lock tables of each account, created with that account's assumed role) and
puts back the Terraform states saved by the previous stop; the first start applies the units once, with the
pipeline's own `run` command. Then `dagster dev` runs with the sensors watching the remote: push a branch for a
plan, push `main` for an apply. Ctrl-C (or SIGTERM, SIGHUP) stops `dagster dev` and its whole process group,
saves the states under `<folder>/aws-states` and stops the emulator.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..core.engine import AMBIENT_AWS_ENV
from . import layout
from .aws import REGION, UNVERIFIED_TOKEN, Aws, MotoServer, backend_config_args
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
    def info_file(self) -> Path:
        return self.folder / "demo.json"

    def info(self) -> dict:
        return json.loads(self.info_file.read_text())

    def record(self, **values) -> None:
        self.info_file.write_text(json.dumps({**self.info(), **values}, indent=2) + "\n")


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
    demo.home.mkdir(exist_ok=True)
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
    })
    return env


def initial_apply(demo: Demo, env: dict) -> bool:
    """Applies the demo's units once, as a push of the units' commit would (a run in the UI's history too);
    whether it ran now."""
    info = demo.info()
    if info.get("applied"):
        return False
    log = demo.folder / "initial-apply.log"
    print(f"applying the demo units once (about a minute; output in {log})", flush=True)
    with log.open("w") as out:
        code = subprocess.run([str(VENV_BIN / "pipelines-dagster"), "run", "--repo", env["PIPELINES_REPO_URL"],
                               "--event", "push", "--base", info["base"], "--head", info["head"]],
                              env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code == 0:
        demo.record(applied=True)
    else:
        print(f"the initial apply failed (exit {code}); see {log} and the run in the UI. The next start tries "
              "again.", file=sys.stderr, flush=True)
    return True


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def serve(env: dict, port: int) -> int:
    """`dagster dev` until it exits or we are stopped; then everything it started is stopped."""
    proc = subprocess.Popen([str(VENV_BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, start_new_session=True)
    try:
        return proc.wait()
    finally:
        _ignore_stop_signals()
        stop_tree(proc.pid)
        proc.wait()


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


def _stop_quietly(signum, _frame):
    raise SystemExit(128 + signum)


def _ignore_stop_signals() -> None:
    """During clean-up: a second Ctrl-C must not cut it short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / ".demo")
    parser.add_argument("--port", type=int, default=3000, help="the Dagster UI's port")
    parser.add_argument("--aws-port", type=int, default=0, help="the AWS emulator's port (default: any free one)")
    args = parser.parse_args(argv)
    if port_in_use(args.port):
        print(f"port {args.port} is in use (is the demo already running?); choose another: make run PORT=...",
              file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started with SIGINT ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):  # so that everything below is stopped on these too
        signal.signal(sig, _stop_quietly)
    demo = create(args.folder)
    server = MotoServer(args.aws_port)
    endpoint = server.start()
    aws = Aws(endpoint)
    try:
        restored = aws.restore_states(layout.ACCOUNTS.values(), demo.states)
        env = environment(demo, endpoint, args.port)
        print(f"demo infrastructure-live: {demo.work} (remote {env['PIPELINES_REPO_URL']})\n"
              f"AWS emulator: {endpoint} ({restored} Terraform state(s) restored)", flush=True)
        initial_apply(demo, env)
        print(f"Dagster UI: http://127.0.0.1:{args.port} (starting; Ctrl-C stops everything)", flush=True)
        return serve(env, args.port)
    except KeyboardInterrupt:
        return 130
    finally:
        _ignore_stop_signals()
        try:
            count = aws.save_states(layout.ACCOUNTS.values(), demo.states)
            saved = f"{count} Terraform state(s) saved in {demo.states}"
        except Exception as exc:  # the emulator is stopped all the same
            saved = f"the Terraform states could not be saved: {exc}"
        server.stop()
        print(f"stopped; {saved}", flush=True)
