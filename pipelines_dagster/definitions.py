"""The one place that assembles the Dagster code locations from the deployment's settings (read once, here) and the
deploy branch's lineage: the plan and apply jobs, sensors, schedules, asset lineage, drift checks and resources.

`defs` is everything in one code location (the embedded default, and any deployment where all runs share one
identity). On Kubernetes the apply identity is a code location's, never a launcher's: `plan_location` holds what
runs with the plan service account (pull requests), `apply_location` what runs with the apply service account
(deploy-branch commits, Materialize, drift checks: the deploy branch's code only), each loaded by a code server of
its own whose container context names that service account (deploy/helm/values.yaml).
"""

import os
from functools import partial
from typing import Literal

import dagster as dg

from .core.lineage import AccountNode, Lineage, read_lineage
from .core.run_requests import TAG_APPLY_LOCK, repo_identity
from .defs.assets import code_location_name, lineage_assets, reconcile_sensor
from .defs.drift import make_drift_definitions
from .defs.jobs import APPLY_JOB, PLAN_JOB, in_process_executor, k8s_step_executor, make_apply_job, make_plan_job
from .defs.loading import DeployBranchLineage
from .defs.resources import InfraRepo, resources_from_settings
from .defs.sensors import (
    make_asset_graph_sensor,
    make_deploy_branch_sensor,
    make_pull_request_sensor,
    make_run_failure_sensor,
)
from .settings import Settings

Role = Literal["all", "plan", "apply"]
ROLE_JOBS: dict[Role, tuple[str, ...]] = {"all": (PLAN_JOB, APPLY_JOB), "plan": (PLAN_JOB,), "apply": (APPLY_JOB,)}


def _jobs(settings: Settings, executor_def, role: Role) -> list[dg.JobDefinition]:
    if settings.step_executor == "k8s":  # a pod per step, with its run's identity
        executor_def = executor_def or k8s_step_executor(settings.max_parallel)
    return [make_plan_job(max_parallel=settings.max_parallel, executor_def=executor_def) if name == PLAN_JOB
            else make_apply_job(stages=settings.wave_stages, max_parallel=settings.max_parallel,
                                executor_def=executor_def)
            for name in ROLE_JOBS[role]]


def run_job_definitions(settings: Settings, accounts: list[AccountNode], job_name: str,
                        executor_def=None) -> dg.Definitions:
    """The plan or apply job alone with its resources, for the deploy branch's `accounts`: all that a run of it
    needs, whatever the number of units."""
    return dg.Definitions(jobs=_jobs(settings, executor_def, "apply" if job_name == APPLY_JOB else "plan"),
                          resources=resources_from_settings(settings, accounts))


def build_definitions(settings: Settings, lineage: Lineage, executor_def=None, role: Role = "all") -> dg.Definitions:
    """What a code location of `role` holds, for the deploy branch's `lineage` (its accounts and units)."""
    status = dg.DefaultScheduleStatus.RUNNING if settings.sensors_running else dg.DefaultScheduleStatus.STOPPED
    jobs = _jobs(settings, executor_def, role)
    sensors: list = [make_asset_graph_sensor(lineage, code_location_name(), settings)]
    assets: list = []
    drift = dg.Definitions()
    for job in jobs:
        sensors.append((make_pull_request_sensor if job.name == PLAN_JOB else make_deploy_branch_sensor)(
            job, settings))
    if role in ("all", "apply"):
        # drift plans and materialized units queue behind applies of the same repository (dagster.yaml's tag
        # limit), and vice versa
        lock = {TAG_APPLY_LOCK: repo_identity(settings.github_repo or settings.repo_url or ".")}
        drift = make_drift_definitions(lineage, cron=settings.drift_cron, paths=settings.drift_paths,
                                       tags=lock, default_status=status)
        assets = lineage_assets(lineage, settings.reconcile_drift)
        if settings.reconcile_drift and lineage.units:
            sensors.append(reconcile_sensor(lineage, lock, interval_s=settings.sensor_interval_s,
                                            default_status=dg.DefaultSensorStatus(status.value)))
    sensors.append(make_run_failure_sensor(jobs, settings))
    located = dg.Definitions(jobs=jobs, assets=assets, sensors=sensors,
                             resources=resources_from_settings(settings, lineage.accounts),
                             # Materialize's runs: fixed, so a run's config cannot change how its steps start
                             executor=dg.multiprocess_executor.configured({"max_concurrent": settings.max_parallel},
                                                                          name="assets_multiprocess"))
    return dg.Definitions.merge(located, drift)


def location(role: Role) -> dg.Definitions | dg.RepositoryDefinition:
    """The code location of `role`, from this process's environment."""
    settings = Settings.from_env()
    return DeployBranchLineage(
        settings, whole=lambda lineage: build_definitions(settings, lineage, role=role),
        run_jobs={name: partial(run_job_definitions, settings, job_name=name) for name in ROLE_JOBS[role]}).load()


@dg.definitions  # type: ignore[arg-type]  # a RepositoryDefinition is loaded too (when reconstructed)
def defs() -> dg.Definitions | dg.RepositoryDefinition:
    return location("all")


def in_process_job(event: str = "pull_request", environment: dict[str, str] | None = None) -> dg.JobDefinition:
    """The plan (`pull_request`) or apply (`push`) job as the code location builds it from the environment (plus
    `environment`), with its steps run one after the other in the calling process: `pipelines-dagster run` and the
    tests (through `run_in_process`)."""
    settings = Settings.from_env({**os.environ, **(environment or {})})
    if settings.repo_url:  # a remote's mirror, its deploy branch brought up to date, so that its accounts are known
        InfraRepo.from_settings(settings).deploy_head()
    lineage = read_lineage(settings.repo_url, settings.deploy_branch, cache_root=settings.cache_root,
                           index_cache=settings.index_cache)
    job_name = APPLY_JOB if event == "push" else PLAN_JOB
    return run_job_definitions(settings, lineage.accounts, job_name, in_process_executor()).resolve_job_def(job_name)


def run_in_process(event: str, run_config: dict | None, *, instance: dg.DagsterInstance,
                   environment: dict[str, str] | None = None, tags: dict | None = None,
                   reexecution: dg.ReexecutionOptions | None = None):
    """Run the plan or apply job in this process (Dagster's execute_job with the job rebuilt by `in_process_job`);
    with `reexecution`, a re-execution of an earlier run (its run config is the earlier run's)."""
    job = dg.build_reconstructable_job("pipelines_dagster.definitions", "in_process_job",
                                       reconstructable_kwargs={"event": event, "environment": environment or {}})
    return dg.execute_job(job, instance=instance, run_config=run_config, tags=tags, raise_on_error=False,
                          reexecution_options=reexecution)
