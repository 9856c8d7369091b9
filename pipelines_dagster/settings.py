"""The deployment's settings: one object, built once from the environment where the program starts (the code
location's definitions, the command line) and passed to what needs it. Nothing reads these variables elsewhere.

Secrets are not settings: the GitHub token and App key and the OIDC token are read where they are used, from a
file when the deployment provides one (`PIPELINES_GITHUB_TOKEN_FILE`, `PIPELINES_WEB_IDENTITY_TOKEN_FILE`), so
they never enter Dagster's resource configuration or the UI. README.md's environment table lists every variable;
a test keeps it and this module in step.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CACHE_FOLDER = "pipelines-dagster"
# When the pipeline runs as root, every unit runs as a uid of its own from this range (no passwd entry needed), so
# that units running at the same time, of other accounts or of an apply, cannot read one another's environments.
DEFAULT_ROOT_UNIT_USERS = "200000-299999"
DEFAULT_OIDC_AUDIENCE = "sts.amazonaws.com"  # AWS STS's


def _env(*names: str):
    return AliasChoices(*names)


class SettingsError(ValueError):
    """A variable has a value that cannot be used; the message names it."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # the repository and GitHub
    repo_url: str | None = Field(None, validation_alias="PIPELINES_REPO_URL",
                                 description="git URL or local path of infrastructure-live")
    github_repo: str | None = Field(None, validation_alias="PIPELINES_GITHUB_REPO",
                                    description="owner/name on GitHub; unset means local mode (no GitHub calls)")
    github_api_url: str = Field("https://api.github.com", validation_alias="GITHUB_API_URL",
                                description="GitHub's API base (GitHub Enterprise, tests)")
    github_write_pause_s: float = Field(0.1, ge=0, validation_alias="PIPELINES_GITHUB_WRITE_PAUSE_S",
                                        description="pause between two GitHub writes of one client")
    deploy_branch: str | None = Field(None, validation_alias="PIPELINES_DEPLOY_BRANCH",
                                      description="the deploy branch, overriding .pipelines.yml's")
    ui_url: str | None = Field(None, validation_alias="PIPELINES_UI_URL",
                               description="base URL of the Dagster UI: run links, code location reloads")
    # how units run
    max_parallel: int = Field(4, ge=1, validation_alias="PIPELINES_MAX_PARALLEL",
                              description="steps (units) of one run at the same time")
    wave_stages: int = Field(8, ge=1, le=64, validation_alias="PIPELINES_WAVE_STAGES",
                             description="apply stages of the job: waves beyond the last run in its one step")
    action_timeout_s: float = Field(3600, gt=0, validation_alias="PIPELINES_ACTION_TIMEOUT_S",
                                    description="deadline of one unit's action (all its commands)")
    tf_plugin_dir: str | None = Field(None, validation_alias="PIPELINES_TF_PLUGIN_DIR",
                                      description="terraform init -plugin-dir: providers only from this folder")
    unit_user: str | None = Field(None, validation_alias="PIPELINES_UNIT_USER",
                                  description="what units run as: FIRST-LAST uids, or a user (default when root: "
                                              f"{DEFAULT_ROOT_UNIT_USERS})")
    unit_env: list[str] = Field(default_factory=list, validation_alias="PIPELINES_UNIT_ENV",
                                description="more variable names (or PREFIX*) passed to units")
    plan_lock: bool = Field(False, validation_alias="PIPELINES_PLAN_LOCK",
                            description="plans take the state lock (default: they read it without)")
    lock_timeout: str = Field("5m", validation_alias="PIPELINES_LOCK_TIMEOUT",
                              description="how long applies wait for the state lock (-lock-timeout)")
    apply_grace_s: float = Field(600, ge=0, validation_alias="PIPELINES_APPLY_GRACE_S",
                                 description="an apply gets SIGKILL only this long after SIGTERM")
    work_dir: str | None = Field(None, validation_alias="PIPELINES_WORK_DIR",
                                 description="where units' run folders go")
    unit_memory_mb: int = Field(8192, ge=1024, validation_alias="PIPELINES_UNIT_MEMORY_MB",
                                description="address space of each unit process (MiB)")
    unit_file_mb: int = Field(4096, ge=1, validation_alias="PIPELINES_UNIT_FILE_MB",
                              description="largest file a unit process may write (MiB)")
    unit_cpu_s: int = Field(7200, ge=1, validation_alias="PIPELINES_UNIT_CPU_S",
                            description="CPU seconds of each unit process")
    unit_processes: int = Field(4096, ge=64, validation_alias="PIPELINES_UNIT_PROCESSES",
                                description="processes and threads of a unit's user, when units run as another user")
    plan_json_max_mb: int = Field(128, ge=1, validation_alias="PIPELINES_PLAN_JSON_MAX_MB",
                                  description="a plan whose `show -json` output is larger fails unread (MiB)")
    # retries
    transient_retries: int = Field(2, ge=0, validation_alias=_env("PIPELINES_TRANSIENT_RETRIES",
                                                                  "PIPELINES_LOCK_RETRIES"),
                                   description="retries of a step after a transient failure (state lock, STS "
                                               "throttling, GitHub outage)")
    transient_retry_wait_s: float = Field(30, ge=0, validation_alias=_env("PIPELINES_TRANSIENT_RETRY_WAIT_S",
                                                                          "PIPELINES_LOCK_RETRY_WAIT_S"),
                                          description="wait before such a retry")
    apply_lock_retries: int = Field(60, ge=0, validation_alias="PIPELINES_APPLY_LOCK_RETRIES",
                                    description="checks of a push run launched by hand for an apply in progress")
    apply_lock_wait_s: float = Field(30, ge=0, validation_alias="PIPELINES_APPLY_LOCK_WAIT_S",
                                     description="wait between those checks")
    # sensors and schedules
    sensor_interval_s: int = Field(30, ge=1, validation_alias="PIPELINES_SENSOR_INTERVAL_S",
                                   description="minimum seconds between two ticks of a sensor")
    sensor_tick_budget_s: float = Field(35, gt=0, validation_alias="PIPELINES_SENSOR_TICK_BUDGET_S",
                                        description="work one tick of the pull request sensor may do")
    max_push_runs_per_tick: int = Field(25, ge=1, validation_alias="PIPELINES_MAX_PUSH_RUNS_PER_TICK",
                                        description="deploy-branch commits handed to runs by one tick")
    sensors_running: bool = Field(True, validation_alias="PIPELINES_SENSORS_DEFAULT_STATUS",
                                  description="sensors and schedules start running (running) or stopped")
    drift_cron: str = Field("0 6 * * *", validation_alias="PIPELINES_DRIFT_CRON",
                            description="drift schedule (cron, UTC)")
    drift_paths: list[str] = Field(default_factory=list, validation_alias="PIPELINES_DRIFT_PATHS",
                                   description="globs of the unit paths drift checks (all when empty)")
    reconcile_drift: bool = Field(False, validation_alias="PIPELINES_RECONCILE_DRIFT",
                                  description="a unit whose drift check fails is applied at the deploy-branch tip "
                                              "by itself, once per failed check (an automation condition)")
    step_outputs_bucket: str | None = Field(None, validation_alias="PIPELINES_STEP_OUTPUTS_BUCKET",
                                            description="S3 bucket of what steps pass each other (default: files "
                                                        "under the instance's storage folder); needed by step pods, "
                                                        "which share no filesystem")
    step_executor: Literal["multiprocess", "k8s"] = Field(
        "multiprocess", validation_alias="PIPELINES_STEP_EXECUTOR",
        description="where each change's step runs: multiprocess (a process of the run's worker) or k8s (a "
                    "Kubernetes Job of its own, dagster-k8s's k8s_job_executor, with its run's service account)")
    # change detection and git
    detect_timeout_s: float = Field(600, gt=0, validation_alias="PIPELINES_DETECT_TIMEOUT_S",
                                    description="deadline of change detection in a run")
    detect_memory_mb: int = Field(4096, ge=256, validation_alias="PIPELINES_DETECT_MEMORY_MB",
                                  description="address space change detection may use in a run (MiB)")
    git_timeout_s: float = Field(45, gt=0, validation_alias="PIPELINES_GIT_TIMEOUT_S",
                                 description="deadline of a git fetch (a clone gets four times as long)")
    cache_dir: str | None = Field(None, validation_alias="PIPELINES_CACHE_DIR",
                                  description="mirrors, parse caches, lock records (default "
                                              "$XDG_CACHE_HOME/pipelines-dagster or ~/.cache/pipelines-dagster)")
    xdg_cache_home: str | None = Field(None, validation_alias="XDG_CACHE_HOME", exclude=True)
    no_cache: bool = Field(False, validation_alias="PIPELINES_NO_CACHE",
                           description="no parse and evaluation cache on disk")
    debug: bool = Field(False, validation_alias="PIPELINES_DEBUG",
                        description="tracebacks instead of one-line internal errors (command line)")
    # OIDC (the token itself is read where it is used)
    oidc_audience: str = Field(DEFAULT_OIDC_AUDIENCE, validation_alias="PIPELINES_OIDC_AUDIENCE",
                               description="audience asked of GitHub Actions' OIDC endpoint")
    aws_region: str | None = Field(None, validation_alias=_env("AWS_REGION", "AWS_DEFAULT_REGION"),
                                   description="region of STS and of units without a region of their own")

    @field_validator("unit_env", "drift_paths", mode="before")
    @classmethod
    def _words(cls, value):
        return [w for w in re.split(r"[,\s]+", value) if w] if isinstance(value, str) else value

    @field_validator("step_executor")
    @classmethod
    def _step_pods_share_no_disk(cls, value, info):
        if value == "k8s" and not info.data.get("step_outputs_bucket"):
            raise ValueError("step pods need PIPELINES_STEP_OUTPUTS_BUCKET: they share no filesystem, so what a "
                             "step passes to the next goes to S3")
        return value

    @field_validator("sensors_running", mode="before")
    @classmethod
    def _status(cls, value):
        if isinstance(value, str) and value.strip().lower() in ("running", "stopped"):
            return value.strip().lower() == "running"
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """The settings of `env` (this process's environment by default); empty variables count as unset.
        SettingsError names every variable whose value cannot be used."""
        env = os.environ if env is None else env
        names = {a for f in cls.model_fields.values() for a in _aliases(f.validation_alias)}
        data = {k: v for k, v in env.items() if k in names and v.strip() != ""}
        try:
            return cls.model_validate({**data, **overrides})
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else "?"
                aliases = _aliases(cls.model_fields[field].validation_alias) if field in cls.model_fields else [field]
                problems.append(f"{aliases[0]}={data.get(aliases[0], '')!r}: {err['msg']}")
            raise SettingsError("; ".join(problems)) from None

    @property
    def cache_root(self) -> Path:
        base = self.cache_dir or os.path.join(self.xdg_cache_home or os.path.expanduser("~/.cache"),
                                              DEFAULT_CACHE_FOLDER)
        return Path(base)

    @property
    def index_cache(self) -> Path | None:
        """Where parsed facts and unit evaluations are kept; None without a disk cache."""
        return None if self.no_cache else self.cache_root / "index"

    @property
    def effective_unit_user(self) -> str | None:
        """What units run as: the setting, else a uid of their own when the pipeline is root."""
        return self.unit_user or default_unit_user()


def default_unit_user() -> str | None:
    """A range of uids, one per unit, when we are root (as in containers); else None: units run as ourselves."""
    return DEFAULT_ROOT_UNIT_USERS if os.geteuid() == 0 else None


def _aliases(alias) -> list[str]:
    if alias is None:
        return []
    if isinstance(alias, str):
        return [alias]
    return [c for c in alias.choices if isinstance(c, str)]


def variables() -> dict[str, str]:
    """Every variable of the settings and what it means (for documentation and its test)."""
    return {_aliases(f.validation_alias)[0]: f.description or "" for f in Settings.model_fields.values()
            if f.description}
