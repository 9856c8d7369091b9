"""The one place that assembles the Dagster code location: the job, sensors, schedules, asset lineage, drift
checks and resources, from the deployment's settings (read once, here) and the deploy branch's lineage."""

import os

import dagster as dg

from .core.lineage import Lineage, read_lineage
from .core.watch import TAG_APPLY_LOCK, repo_identity
from .defs.assets import DeployBranchLineage, code_location_name, lineage_assets, reconcile_sensor
from .defs.drift import make_drift_definitions
from .defs.pipeline import JOB_NAME, in_process_executor, k8s_step_executor, k8s_step_tags, make_pipeline_job
from .defs.resources import InfraRepo, resources_from_settings
from .defs.sensors import (
    apply_run_tags,
    make_asset_graph_sensor,
    make_deploy_branch_sensor,
    make_pull_request_sensor,
    make_run_failure_sensor,
)
from .settings import Settings


def build_definitions(settings: Settings, lineage: Lineage, executor_def=None) -> dg.Definitions:
    """Everything the code location holds, for the deploy branch's `lineage` (its accounts and units)."""
    resources = resources_from_settings(settings, lineage.accounts)
    plan_tags: dict[str, str] = {}
    apply_tags: dict[str, str] = {}
    if settings.step_executor == "k8s":  # a pod per step, with the service account of its action
        assert settings.apply_service_account  # Settings requires it with the k8s step executor
        executor_def = executor_def or k8s_step_executor(settings.max_parallel)
        plan_tags = k8s_step_tags(settings.plan_service_account)
        apply_tags = k8s_step_tags(settings.apply_service_account)
    job = make_pipeline_job(stages=settings.wave_stages, max_parallel=settings.max_parallel,
                            executor_def=executor_def, plan_tags=plan_tags, apply_tags=apply_tags)
    status = dg.DefaultScheduleStatus.RUNNING if settings.sensors_running else dg.DefaultScheduleStatus.STOPPED
    # drift plans and materialized units queue behind applies of the same repository (dagster.yaml's tag
    # limit), and vice versa
    lock = {TAG_APPLY_LOCK: repo_identity(settings.github_repo or settings.repo_url or ".")}
    drift = make_drift_definitions(lineage, cron=settings.drift_cron, paths=settings.drift_paths,
                                   tags=lock, default_status=status)
    sensors = [make_pull_request_sensor(job, settings), make_deploy_branch_sensor(job, settings),
               make_run_failure_sensor(job, settings),
               make_asset_graph_sensor(lineage, code_location_name(), settings)]
    if settings.reconcile_drift and lineage.units:
        sensors.append(reconcile_sensor(lineage, {**lock, **apply_run_tags(settings.apply_service_account)},
                                        interval_s=settings.sensor_interval_s,
                                        default_status=dg.DefaultSensorStatus(status.value)))
    pipeline = dg.Definitions(
        jobs=[job], assets=lineage_assets(lineage, settings.reconcile_drift), resources=resources,
        sensors=sensors)
    return dg.Definitions.merge(pipeline, drift)


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return DeployBranchLineage(settings, lambda lineage: build_definitions(settings, lineage)).load()


def in_process_job(environment: dict[str, str] | None = None) -> dg.JobDefinition:
    """The job as the code location builds it from the environment (plus `environment`), with its steps run one
    after the other in the calling process: `pipelines-dagster run` and the tests (through `run_in_process`)."""
    settings = Settings.from_env({**os.environ, **(environment or {})})
    if settings.repo_url:  # a remote's mirror, its deploy branch brought up to date, so that its accounts are known
        InfraRepo.from_settings(settings).deploy_head()
    lineage = read_lineage(settings.repo_url, settings.deploy_branch, cache_root=settings.cache_root,
                           index_cache=settings.index_cache)
    return build_definitions(settings, lineage, in_process_executor()).resolve_job_def(JOB_NAME)


def run_in_process(run_config: dict | None, *, instance: dg.DagsterInstance,
                   environment: dict[str, str] | None = None, tags: dict | None = None,
                   reexecution: dg.ReexecutionOptions | None = None):
    """Run the job in this process (Dagster's execute_job with the job rebuilt by `in_process_job`); with
    `reexecution`, a re-execution of an earlier run (its run config is the earlier run's)."""
    job = dg.build_reconstructable_job("pipelines_dagster.definitions", "in_process_job",
                                       reconstructable_kwargs={"environment": environment or {}})
    return dg.execute_job(job, instance=instance, run_config=run_config, tags=tags, raise_on_error=False,
                          reexecution_options=reexecution)
