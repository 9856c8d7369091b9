"""How engines are run: the deployment's choices (pipelines_dagster.settings), never the repository's."""


from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .isolation.confinement import Confinement
from .isolation.users import default_unit_user
from .statelock import Holders


@dataclass
class EngineSettings:
    """How engines are run; the deployment's choices, not the repository's."""

    binaries: dict[str, str] = field(default_factory=dict)  # engine name -> executable (name or path)
    plugin_dir: str | None = None  # `init -plugin-dir`: install providers offline from this folder (and only so)
    init_args: list[str] = field(default_factory=list)
    plan_args: list[str] = field(default_factory=list)
    apply_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra child environment (TF_CLI_CONFIG_FILE, ...)
    env_names: list[str] = field(default_factory=list)  # more of our variables passed to units (NAME or PREFIX*)
    # the user units run as (name or uid): `nobody` when we are root, else None (ourselves)
    unit_user: str | None = field(default_factory=default_unit_user)
    timeout_s: float = 3600.0  # for the whole action (all its commands)
    kill_grace_s: float = 10.0  # plans: SIGTERM, then SIGKILL after this long
    apply_kill_grace_s: float = 600.0  # applies and destroys: never SIGKILLed sooner after SIGTERM
    plan_lock: bool = False  # plans take the state lock (by default they read the state without it)
    lock_timeout: str | None = "5m"  # `-lock-timeout=...` of commands that take the lock; None fails at once
    # `plan -detailed-exitcode`: exit 2 (a diff) is a success, and the result's exit_code is the plan's (0 or 2)
    detailed_exitcode: bool = False
    max_output_chars: int = 200_000
    # limits of every unit process (see core.isolation.Confinement); processes: of the unit user, when it has one
    unit_memory_mb: int = 8192  # address space: Terraform with the null provider needs 768 MiB
    unit_file_mb: int = 4096
    unit_cpu_s: int = 7200
    unit_processes: int = 4096  # threads included
    plan_json_max_mb: int = 128  # `show -json` output larger than this is not read
    workdir_root: str | None = None  # parent of run folders (default: the system temp folder)
    keep_workdir: bool = False
    holders_dir: str | None = None  # records of our lock-taking commands (default: under the cache folder)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "EngineSettings":
        """The deployment's engine settings (pipelines_dagster.settings), with `overrides`."""
        from ..settings import Settings

        return cls.from_settings(Settings.from_env(env), **overrides)

    @classmethod
    def from_settings(cls, settings, **overrides) -> "EngineSettings":
        values = dict(plugin_dir=settings.tf_plugin_dir, timeout_s=settings.action_timeout_s,
                      unit_user=settings.effective_unit_user, env_names=list(settings.unit_env),
                      plan_lock=settings.plan_lock, lock_timeout=settings.lock_timeout or None,
                      apply_kill_grace_s=settings.apply_grace_s, workdir_root=settings.work_dir,
                      holders_dir=str(settings.cache_root / "lock-holders"), unit_memory_mb=settings.unit_memory_mb,
                      unit_file_mb=settings.unit_file_mb, unit_cpu_s=settings.unit_cpu_s,
                      unit_processes=settings.unit_processes, plan_json_max_mb=settings.plan_json_max_mb)
        return cls(**{**values, **overrides})

    def binary(self, engine: str) -> str:
        return self.binaries.get(engine, engine)

    def confinement(self, own_user: bool) -> Confinement:
        """The limits of a unit's processes; `own_user`: they run as a user of their own (not as ourselves)."""
        return Confinement(memory_mb=self.unit_memory_mb, file_mb=self.unit_file_mb, cpu_s=self.unit_cpu_s,
                           processes=self.unit_processes if own_user else None)

    @property
    def stale_after_s(self) -> float:
        """No lock of ours is older: the action's timeout, the apply grace, and a minute for the rest."""
        return self.timeout_s + self.apply_kill_grace_s + 60

    def holders(self) -> Holders:
        if self.holders_dir:
            return Holders(Path(self.holders_dir))
        from ..settings import Settings

        return Holders(Settings.from_env().cache_root / "lock-holders")


