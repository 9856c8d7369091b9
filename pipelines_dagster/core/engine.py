"""Run one unit's action with terraform, tofu or terragrunt, non-interactively, and say honestly what happened.

plan:          init, plan -out=<file>, show -json <file>  -> structured summary
apply:         the same, then apply <file> (what was logged is what is applied)
plan-destroy:  init, plan -destroy -out=<file>, show -json
destroy:       the same, then apply <file>

Every run happens in a private working copy (prepared by the caller, see `core.executor`), with a deadline for
the whole action (the process group is killed when it passes), output captured with a size cap that keeps head
and tail, and every line redacted before it is stored.
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .model import Action
from .redact import Redactor, StreamRedactor, default_redactor

log = logging.getLogger(__name__)

PLUGIN_DIR_VAR = "PIPELINES_TF_PLUGIN_DIR"
TIMEOUT_VAR = "PIPELINES_ACTION_TIMEOUT_S"
ENGINES = ("terraform", "tofu", "terragrunt")

# Never passed to a unit's child process: the unit's code (local-exec, external data sources) is untrusted and
# must not mint OIDC tokens or talk to GitHub as the pipeline.
ALWAYS_STRIPPED_ENV = (
    "GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_RUNTIME_TOKEN", "PIPELINES_GITHUB_APP_PRIVATE_KEY", "PIPELINES_WEB_IDENTITY_TOKEN_FILE",
    "PIPELINES_WEB_IDENTITY_TOKEN_COMMAND",
)
# Removed when the unit gets its own account's credentials, so that nothing ambient can win over them.
AMBIENT_AWS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
)
NON_INTERACTIVE_ENV = {
    "TF_IN_AUTOMATION": "1",
    "TF_INPUT": "0",
    "CHECKPOINT_DISABLE": "1",
    "TERRAGRUNT_NON_INTERACTIVE": "true",
    "TG_NON_INTERACTIVE": "true",
    "TERRAGRUNT_NO_COLOR": "true",
    "TG_NO_COLOR": "true",
    "NO_COLOR": "1",
}
TIMED_OUT_EXIT = 124  # as timeout(1)


class Status(str, Enum):
    SUCCEEDED = "succeeded"
    NO_CHANGES = "no_changes"
    FAILED = "failed"
    STATE_LOCKED = "state_locked"
    TIMED_OUT = "timed_out"
    TOOL_MISSING = "tool_missing"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        return self in (Status.SUCCEEDED, Status.NO_CHANGES)


# --------------------------------------------------------------------------------------------- settings


@dataclass
class EngineSettings:
    """How engines are run; the deployment's choices, not the repository's."""

    binaries: dict[str, str] = field(default_factory=dict)  # engine name -> executable (name or path)
    plugin_dir: str | None = None  # `init -plugin-dir`: install providers offline from this folder
    init_args: list[str] = field(default_factory=list)
    plan_args: list[str] = field(default_factory=list)
    apply_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra child environment (TF_CLI_CONFIG_FILE, ...)
    timeout_s: float = 3600.0  # for the whole action (all its commands)
    kill_grace_s: float = 10.0  # SIGTERM, then SIGKILL after this long
    lock_timeout: str | None = None  # `-lock-timeout=...`; Terraform's default is to fail at once
    # `plan -detailed-exitcode`: exit 2 (a diff) is a success, and the result's exit_code is the plan's (0 or 2)
    detailed_exitcode: bool = False
    max_output_chars: int = 200_000
    workdir_root: str | None = None  # parent of private working copies (default: the system temp folder)
    keep_workdir: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "EngineSettings":
        env = os.environ if env is None else env
        settings = cls(**overrides)
        if settings.plugin_dir is None and env.get(PLUGIN_DIR_VAR):
            settings.plugin_dir = env[PLUGIN_DIR_VAR]
        if "timeout_s" not in overrides and env.get(TIMEOUT_VAR):
            settings.timeout_s = float(env[TIMEOUT_VAR])
        return settings

    def binary(self, engine: str) -> str:
        return self.binaries.get(engine, engine)


# --------------------------------------------------------------------------------------------- results


@dataclass
class PlanSummary:
    add: int = 0
    change: int = 0
    destroy: int = 0
    resources: list[dict] = field(default_factory=list)  # {"address", "action", "actions"}
    outputs: list[dict] = field(default_factory=list)  # {"name", "action", "actions"}

    @property
    def has_changes(self) -> bool:
        return bool(self.resources or self.outputs)

    def line(self) -> str:
        text = f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"
        if self.outputs:
            text += f", {len(self.outputs)} output change{'s' if len(self.outputs) != 1 else ''}"
        return text

    def to_dict(self) -> dict:
        return {"add": self.add, "change": self.change, "destroy": self.destroy,
                "resources": list(self.resources), "outputs": list(self.outputs)}

    @classmethod
    def from_plan_json(cls, plan: dict) -> "PlanSummary":
        """Counts as Terraform prints them: a replacement is one add and one destroy; reads are not changes."""
        summary = cls()
        for rc in plan.get("resource_changes") or []:
            actions = list((rc.get("change") or {}).get("actions") or [])
            if not actions or actions in (["no-op"], ["read"]):
                continue
            if "create" in actions:
                summary.add += 1
            if "delete" in actions:
                summary.destroy += 1
            if "update" in actions:
                summary.change += 1
            summary.resources.append({"address": rc.get("address"), "action": _action_label(actions),
                                      "actions": actions})
        for name, oc in sorted((plan.get("output_changes") or {}).items()):
            actions = list((oc or {}).get("actions") or [])
            if actions and actions != ["no-op"]:
                summary.outputs.append({"name": name, "action": _action_label(actions), "actions": actions})
        return summary


def _action_label(actions: list[str]) -> str:
    if "create" in actions and "delete" in actions:
        return "replace"
    return actions[0] if len(actions) == 1 else "+".join(actions)


@dataclass
class LockInfo:
    id: str | None = None
    who: str | None = None
    operation: str | None = None
    created: str | None = None
    path: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "who": self.who, "operation": self.operation, "created": self.created,
                "path": self.path}


@dataclass
class Result:
    status: Status
    unit: str | None = None
    action: str | None = None
    engine: str | None = None
    commit: str | None = None
    summary: PlanSummary = field(default_factory=PlanSummary)
    duration_s: float = 0.0
    # of the failing command, else of the last one (the plan's with detailed_exitcode); None when nothing ran
    exit_code: int | None = None
    output: str = ""  # redacted, capped
    message: str = ""  # redacted
    lock: LockInfo | None = None
    account: str | None = None
    role_arn: str | None = None
    transient: bool = False  # failed for a reason that may clear (STS throttling): worth a later retry

    @property
    def ok(self) -> bool:
        return self.status.ok

    def to_dict(self) -> dict:
        data = {
            "status": self.status.value,
            "unit": self.unit,
            "action": self.action,
            "engine": self.engine,
            "commit": self.commit,
            "account": self.account,
            "role_arn": self.role_arn,
            "summary": self.summary.to_dict(),
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "message": self.message,
            "output": self.output,
        }
        if self.lock is not None:
            data["lock"] = self.lock.to_dict()
        if self.transient:
            data["transient"] = True
        return data

    @classmethod
    def skipped(cls, unit: str | None, action: str | None, reason: str) -> "Result":
        return cls(status=Status.SKIPPED, unit=unit, action=action, message=reason)


# --------------------------------------------------------------------------------------------- output capture


class OutputCapture:
    """Redacts line by line and keeps the first and the last `limit / 2` characters."""

    def __init__(self, limit: int, redactor: Redactor):
        self.head_limit = max(limit // 2, 1)
        self.tail_limit = max(limit - self.head_limit, 1)
        self.redact = StreamRedactor(redactor)  # line by line, and a private key's lines in between
        self.head: list[str] = []
        self.head_chars = 0
        self.tail: deque[str] = deque()
        self.tail_chars = 0
        self.omitted_lines = 0
        self.omitted_chars = 0
        self.step_text: deque[str] = deque(maxlen=400)  # last lines of the current command, for diagnostics
        self._lock = threading.Lock()

    def feed(self, raw: bytes | str) -> None:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = self.redact(line.replace("\r\n", "\n"))
        if not line:  # inside a private key
            return
        if len(line) > self.tail_limit:
            line = line[: self.tail_limit - 40] + " ...[line truncated]\n"
        with self._lock:
            self.step_text.append(line)
            if not self.tail and self.head_chars + len(line) <= self.head_limit:
                self.head.append(line)
                self.head_chars += len(line)
                return
            self.tail.append(line)
            self.tail_chars += len(line)
            while self.tail_chars > self.tail_limit:
                dropped = self.tail.popleft()
                self.tail_chars -= len(dropped)
                self.omitted_lines += 1
                self.omitted_chars += len(dropped)

    def start_step(self, command: str) -> None:
        with self._lock:
            self.step_text.clear()
        self.feed(f"$ {command}\n")

    def step(self) -> str:
        with self._lock:
            return "".join(self.step_text)

    def text(self) -> str:
        with self._lock:
            middle = ""
            if self.omitted_lines:
                middle = f"\n... [{self.omitted_lines} lines, {self.omitted_chars} characters omitted] ...\n\n"
            return "".join(self.head) + middle + "".join(self.tail)


# --------------------------------------------------------------------------------------------- processes


@dataclass
class _Completed:
    exit_code: int | None
    timed_out: bool = False


def _pump(stream, sink) -> None:
    try:
        for line in iter(stream.readline, b""):
            sink(line)
    except (OSError, ValueError):
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(args: Sequence[str], *, cwd: Path, env: Mapping[str, str], capture: OutputCapture,
                deadline: float, kill_grace_s: float, stdout_file: Path | None = None) -> _Completed:
    """Runs one command in its own process group; output (stderr, and stdout unless sent to a file) is captured."""
    out_fh = open(stdout_file, "wb") if stdout_file is not None else None
    try:
        proc = subprocess.Popen(list(args), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=out_fh if out_fh is not None else subprocess.PIPE,
                                stderr=subprocess.PIPE if out_fh is not None else subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if out_fh is not None:
            out_fh.close()
    stream = proc.stderr if out_fh is not None else proc.stdout
    reader = threading.Thread(target=_pump, args=(stream, capture.feed), daemon=True)
    reader.start()
    # A watchdog enforces the deadline, so that this thread can block in wait() (Popen.wait with a timeout polls
    # with sleeps of up to 50 ms, which shows in the run time of short commands).
    exited = threading.Event()
    timed_out = threading.Event()

    def watchdog() -> None:
        if exited.wait(max(deadline - time.monotonic(), 0.0)):
            return
        timed_out.set()
        _kill_group(proc.pid, signal.SIGTERM)  # Terraform stops gracefully on SIGTERM (and releases its lock)
        if not exited.wait(kill_grace_s):
            _kill_group(proc.pid, signal.SIGKILL)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        proc.wait()
    except BaseException:  # interrupted (run cancelled): the child must not outlive us
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=kill_grace_s)
        finally:
            _kill_group(proc.pid, signal.SIGKILL)
            exited.set()
        raise
    exited.set()
    guard.join()
    # Whatever the command left behind in its group (a provisioner's background job) does not outlive it.
    _kill_group(proc.pid, signal.SIGKILL)
    reader.join(timeout=5)
    return _Completed(exit_code=proc.returncode, timed_out=timed_out.is_set())


# --------------------------------------------------------------------------------------------- diagnostics

_LOCK_MARKERS = ("Error acquiring the state lock", "Error locking state", "ConditionalCheckFailedException")
_ERROR_LINE = re.compile(r"^[\s│╷]*Error: (.+)$", re.M)


def parse_lock_info(text: str) -> LockInfo | None:
    """The lock Terraform reports when the state is held by someone else."""
    if not any(marker in text for marker in _LOCK_MARKERS[:2]):
        return None
    info = LockInfo()
    block = text.split("Lock Info:", 1)[1] if "Lock Info:" in text else ""
    for key, attr in (("ID", "id"), ("Who", "who"), ("Operation", "operation"), ("Created", "created"),
                      ("Path", "path")):
        match = re.search(rf"^[\s│]*{key}:[ \t]*(.*?)[ \t]*$", block, re.M)
        if match and match.group(1):
            setattr(info, attr, match.group(1))
    return info


def error_message(text: str, limit: int = 1500) -> str:
    """Terraform's error diagnostics ('Error: ...' and the lines under it), else the last lines of output."""
    lines = text.splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if _ERROR_LINE.match(line):
            block = [line.strip(" │╷╵")]
            for follow in lines[i + 1: i + 12]:
                if _ERROR_LINE.match(follow) or follow.strip() == "╵":
                    break
                block.append(follow.lstrip("│╷╵").rstrip())
            picked.append("\n".join(block).strip())
    if not picked:
        tail = [ln for ln in lines if ln.strip() and not ln.startswith("$ ")][-8:]
        picked = ["\n".join(tail)]
    message = "\n\n".join(picked)
    return message if len(message) <= limit else message[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------- the runner


def child_environment(credentials_env: Mapping[str, str] | None, settings: EngineSettings,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours minus pipeline secrets (minus ambient AWS credentials when the unit gets
    its own), plus the deployment's extras, the unit's credentials, and the non-interactive switches."""
    env = dict(os.environ if base is None else base)
    for var in ALWAYS_STRIPPED_ENV:
        env.pop(var, None)
    if credentials_env is not None:
        for var in AMBIENT_AWS_ENV:
            env.pop(var, None)
    env.update(settings.env)
    if credentials_env:
        env.update(credentials_env)
    env.update(NON_INTERACTIVE_ENV)
    tf = settings.binaries.get("tofu") or settings.binaries.get("terraform")
    if tf:  # terragrunt runs the same terraform the deployment configured
        env.setdefault("TERRAGRUNT_TFPATH", tf)
        env.setdefault("TG_TF_PATH", tf)
    return env


def _which(binary: str, env: Mapping[str, str]) -> str | None:
    if os.sep in binary:
        return binary if os.path.isfile(binary) and os.access(binary, os.X_OK) else None
    return shutil.which(binary, path=env.get("PATH", os.defpath))


def run_in_workdir(root: Path, unit: str, action: Action | str, engine: str = "terraform", *,
                   credentials_env: Mapping[str, str] | None = None, settings: EngineSettings | None = None,
                   redactor: Redactor | None = None, run_dir: Path | None = None,
                   commit: str | None = None) -> Result:
    """Runs `action` for `unit` inside `root`, a private working copy of the repository that this run owns.

    `credentials_env` (AWS_* variables) goes into the children's environment only; None means ambient
    credentials. Plan files live in `run_dir` (default: a folder next to `root`)."""
    started = time.monotonic()
    action = Action(action)
    settings = settings or EngineSettings.from_env()
    if redactor is None:
        redactor = default_redactor(*(credentials_env or {}).values())
    result = Result(status=Status.FAILED, unit=unit, action=action.value, engine=engine, commit=commit)

    def finish(status: Status, message: str, exit_code: int | None = None) -> Result:
        result.status = status
        result.message = redactor(message)
        result.exit_code = exit_code
        result.output = capture.text()
        result.duration_s = time.monotonic() - started
        log.info("%s %s %s: %s", engine, action.value, unit, result.status.value)
        return result

    capture = OutputCapture(settings.max_output_chars, redactor)
    if not action.runs_terraform:
        return finish(Status.FAILED, f"action {action.value!r} does not run {engine}")
    if engine not in ENGINES:
        return finish(Status.FAILED, f"unknown engine {engine!r} (terraform, tofu or terragrunt)")
    unit_dir = root / unit
    if not unit_dir.is_dir():
        return finish(Status.FAILED, f"unit {unit} does not exist in this commit")
    env = child_environment(credentials_env, settings)
    binary = _which(settings.binary(engine), env)
    if binary is None:
        return finish(Status.TOOL_MISSING, f"{engine} is not installed (no {settings.binary(engine)!r} on PATH)")

    run_dir = run_dir or root.parent
    plan_file = run_dir / "plan.tfplan"
    plan_json = run_dir / "plan.json"
    deadline = started + settings.timeout_s
    destroy = action.is_destroy
    steps: list[tuple[str, list[str], Path | None]] = [
        ("init", ["init", "-input=false", "-no-color",
                  *([f"-plugin-dir={settings.plugin_dir}"] if settings.plugin_dir else []), *settings.init_args],
         None),
        ("plan", ["plan", "-input=false", "-no-color", f"-out={plan_file}", *(["-destroy"] if destroy else []),
                  *(["-detailed-exitcode"] if settings.detailed_exitcode else []),
                  *([f"-lock-timeout={settings.lock_timeout}"] if settings.lock_timeout else []),
                  *settings.plan_args], None),
        ("show", ["show", "-json", "-no-color", str(plan_file)], plan_json),
    ]
    if action in (Action.APPLY, Action.DESTROY):
        steps.append(("apply", ["apply", "-input=false", "-no-color", "-auto-approve",
                                *([f"-lock-timeout={settings.lock_timeout}"] if settings.lock_timeout else []),
                                *settings.apply_args, str(plan_file)], None))

    last_exit = plan_exit = None
    for name, args, stdout_file in steps:
        if name == "apply" and not result.summary.has_changes:
            return finish(Status.NO_CHANGES, "No changes: nothing to apply.", last_exit)
        command = [binary, *args]
        capture.start_step(" ".join([engine, *args]).replace(str(run_dir), "$RUN_DIR"))
        log.debug("running %s in %s", " ".join(command), unit_dir)
        try:
            done = run_process(command, cwd=unit_dir, env=env, capture=capture, deadline=deadline,
                               kill_grace_s=settings.kill_grace_s, stdout_file=stdout_file)
        except FileNotFoundError:
            return finish(Status.TOOL_MISSING, f"{engine} is not installed ({binary!r} cannot be run)")
        except OSError as exc:
            return finish(Status.FAILED, f"cannot run {engine}: {exc}")
        last_exit = done.exit_code
        diff = name == "plan" and settings.detailed_exitcode and done.exit_code == 2  # "succeeded, with a diff"
        if name == "plan" and settings.detailed_exitcode:
            plan_exit = done.exit_code
        if done.timed_out:
            return finish(Status.TIMED_OUT, f"{engine} {name} timed out after {settings.timeout_s:g}s for the "
                                            f"action; its processes were stopped", TIMED_OUT_EXIT)
        if done.exit_code != 0 and not diff:
            text = capture.step()
            lock = parse_lock_info(text)
            if lock is not None:
                result.lock = lock
                holder = f" by {lock.who}" if lock.who else ""
                ident = f" (lock ID {lock.id})" if lock.id else ""
                return finish(Status.STATE_LOCKED, f"the state is locked{holder}{ident}: {engine} {name} did not "
                                                   f"run; retry when the other operation has finished",
                              done.exit_code)
            return finish(Status.FAILED, f"{engine} {name} failed (exit {done.exit_code}):\n{error_message(text)}",
                          done.exit_code)
        if name == "show":
            try:
                result.summary = PlanSummary.from_plan_json(json.loads(plan_json.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                return finish(Status.FAILED, f"cannot read the plan from `{engine} show -json`: {exc}", 1)
            capture.feed(f"Summary: {result.summary.line()}\n")

    applied = action in (Action.APPLY, Action.DESTROY)
    exit_code = plan_exit if settings.detailed_exitcode and not applied else last_exit
    if not result.summary.has_changes:
        return finish(Status.NO_CHANGES, "No changes.", exit_code)
    return finish(Status.SUCCEEDED, f"{'Applied' if applied else 'Plan'}: {result.summary.line()}.", exit_code)
