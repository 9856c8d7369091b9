"""How engines are run: the deployment's choices (pipelines_dagster.settings), never the repository's."""


from dataclasses import dataclass, field
from pathlib import Path

from ..settings import Settings, default_unit_user
from .isolation.confinement import Confinement
from .statelock import Holders


def _default(name: str):
    return Settings.model_fields[name].default


# Settings that the engine takes as they are (same name, same meaning, same default)
FROM_SETTINGS = ("tf_plugin_dir", "action_timeout_s", "plan_lock", "apply_grace_s", "work_dir", "unit_memory_mb",
                 "unit_file_mb", "unit_cpu_s", "unit_processes", "plan_json_max_mb")


@dataclass
class EngineSettings:
    """How engines are run; the deployment's choices, not the repository's. The fields named as Settings fields are
    those settings (see pipelines_dagster.settings for what each means); the others are the engine's own."""

    binaries: dict[str, str] = field(default_factory=dict)  # engine name -> executable (name or path)
    tf_plugin_dir: str | None = _default("tf_plugin_dir")
    init_args: list[str] = field(default_factory=list)
    plan_args: list[str] = field(default_factory=list)
    apply_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra child environment (TF_CLI_CONFIG_FILE, ...)
    unit_env: list[str] = field(default_factory=list)
    unit_user: str | None = field(default_factory=default_unit_user)
    action_timeout_s: float = _default("action_timeout_s")
    plan_grace_s: float = 10.0  # plans: SIGTERM, then SIGKILL after this long
    apply_grace_s: float = _default("apply_grace_s")
    plan_lock: bool = _default("plan_lock")
    lock_timeout: str | None = _default("lock_timeout")  # None: commands that take the lock fail at once
    # `plan -detailed-exitcode`: exit 2 (a diff) is a success, and the result's exit_code is the plan's (0 or 2)
    detailed_exitcode: bool = False
    max_output_chars: int = 200_000
    unit_memory_mb: int = _default("unit_memory_mb")
    unit_file_mb: int = _default("unit_file_mb")
    unit_cpu_s: int = _default("unit_cpu_s")
    unit_processes: int = _default("unit_processes")
    plan_json_max_mb: int = _default("plan_json_max_mb")
    work_dir: str | None = _default("work_dir")
    keep_workdir: bool = False
    holders_dir: str | None = None  # records of our lock-taking commands; None: none kept (stale locks by age only)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "EngineSettings":
        values = {name: getattr(settings, name) for name in FROM_SETTINGS}
        values.update(unit_env=list(settings.unit_env), unit_user=settings.effective_unit_user,
                      lock_timeout=settings.lock_timeout or None,
                      holders_dir=str(settings.cache_root / "lock-holders"))
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
        return self.action_timeout_s + self.apply_grace_s + 60

    def holders(self) -> Holders | None:
        return Holders(Path(self.holders_dir)) if self.holders_dir else None
