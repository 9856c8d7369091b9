"""The job run in this process the way `pipelines-dagster run` runs it (Dagster's execute_job, the job rebuilt
from the settings the test gives), with its typed results at hand."""

from dataclasses import dataclass

import dagster as dg

from pipelines_dagster.core.dispatch import Progress
from pipelines_dagster.core.model import Outcome
from pipelines_dagster.definitions import run_in_process
from pipelines_dagster.defs.jobs import APPLY_JOB, report_output


@dataclass
class Run:
    result: object  # dagster's ExecuteJobResult
    progress: Progress | None  # the report step's output (None: the run failed before reporting)

    @property
    def success(self) -> bool:
        return self.result.success

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def all_events(self):
        return self.result.all_events

    @property
    def outcomes(self) -> list[Outcome]:
        return self.progress.outcome_list() if self.progress else []

    def by_unit(self) -> dict[str, Outcome]:
        return {o.change.unit: o for o in self.outcomes}

    def failures(self) -> list:
        return [e for e in self.all_events if e.event_type_value == "STEP_FAILURE"]

    def github_problems(self) -> list | None:
        return self._report_metadata("github_problems")

    def report(self) -> str | None:
        return self._report_metadata("report")

    def _report_metadata(self, key: str):
        output = report_output(self.all_events)
        return output.event_specific_data.metadata[key].value if output else None


def run_job(repo, env: dict, event: str, base: str, head: str, pr: int | None = None, github_repo: str | None = None,
            instance: dg.DagsterInstance | None = None, **settings: str) -> Run:
    """One run for `repo`; `env` from the tests' fixtures (the plugin folder); `settings` more variables. With
    GitHub, a pull request's run is launched by its number alone, as its sensor and the Launchpad do (GitHub gives
    its head and base)."""
    config = {"pr_number": pr} if github_repo and pr is not None and event == "pull_request" else {
        "event": event, "base_ref": base, "head_ref": head, "pr_number": pr}
    return launch(repo, env, config, github_repo=github_repo, instance=instance, **settings)


def launch(repo, env: dict, config: dict | None, github_repo: str | None = None,
           instance: dg.DagsterInstance | None = None, reexecution: dg.ReexecutionOptions | None = None,
           tags: dict | None = None, run_config: dict | None = None, event: str | None = None,
           **settings: str) -> Run:
    """A run with `config` as orchestrate's run config, as the Launchpad gives it (its `event`, pull_request by
    default, picks the plan or the apply job); with `reexecution` (and `config` None), what the UI's re-execute
    buttons launch; `run_config`: more of the run's configuration."""
    environment = {"PIPELINES_REPO_URL": str(repo.path), "PIPELINES_TF_PLUGIN_DIR": env["plugin_dir"],
                   "PIPELINES_GITHUB_WRITE_PAUSE_S": "0", "PIPELINES_GITHUB_REPO": github_repo or "", **settings}
    config = dict(config) if config is not None else None
    event = (config or {}).pop("event", None) or event or (
        reexecution and instance and _event_of(instance, reexecution)) or "pull_request"
    if config is not None:
        if event == "push":
            config.pop("pr_number", None)
        run_config = {**(run_config or {}), "ops": {"orchestrate": {"config": config}}}
    with run_in_process(event, run_config, instance=instance or dg.DagsterInstance.ephemeral(), environment=environment,
                        reexecution=reexecution, tags=tags) as result:
        output = report_output(result.all_events)
        return Run(result, result.output_for_node(output.step_key) if output else None)


def _event_of(instance: dg.DagsterInstance, reexecution: dg.ReexecutionOptions) -> str:
    run = instance.get_run_by_id(reexecution.parent_run_id)
    return "push" if run is not None and run.job_name == APPLY_JOB else "pull_request"
