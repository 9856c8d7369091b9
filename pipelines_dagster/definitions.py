"""The one place that assembles the Dagster code location: jobs, sensors, schedules, asset lineage and resources
from the environment."""

import os

import dagster as dg

from .core.watch import TAG_APPLY_LOCK
from .defs.assets import DeployBranchLineage, code_location_name
from .defs.drift import DEFAULT_CRON, make_drift_definitions, paths_from_env
from .defs.pipeline import infrastructure_pipeline
from .defs.resources import apply_lock, resources_from_env
from .defs.sensors import (DEFAULT_STATUS, make_asset_graph_sensor, make_deploy_branch_sensor,
                           make_pull_request_sensor, make_run_failure_sensor)


def lineage_definitions(lineage, resources: dict, env=None) -> dg.Definitions:
    """What depends on the deploy branch's units: drift checks, their job and schedule, the asset graph sensor."""
    env = os.environ if env is None else env
    # drift plans queue behind applies of the same repository (dagster.yaml's tag limit), and vice versa
    lock = apply_lock(resources["github"], resources["infra_repo"])
    drift = make_drift_definitions(
        lineage, cron=env.get("PIPELINES_DRIFT_CRON") or DEFAULT_CRON, paths=paths_from_env(env),
        tags={TAG_APPLY_LOCK: lock},
        default_status=dg.DefaultScheduleStatus(DEFAULT_STATUS.value))
    sensor = make_asset_graph_sensor(lineage, code_location_name(), env.get("PIPELINES_UI_URL") or None)
    return dg.Definitions.merge(drift, dg.Definitions(sensors=[sensor]))


@dg.definitions
def defs() -> dg.Definitions:
    resources = resources_from_env()
    pipeline = dg.Definitions(jobs=[infrastructure_pipeline],
                              sensors=[make_pull_request_sensor(infrastructure_pipeline),
                                       make_deploy_branch_sensor(infrastructure_pipeline),
                                       make_run_failure_sensor(infrastructure_pipeline)],
                              resources=resources)
    lineage = DeployBranchLineage(os.environ.get("PIPELINES_REPO_URL") or None, resources["infra_repo"].deploy_branch,
                                  dependents=lambda found: lineage_definitions(found, resources))
    return dg.Definitions.merge(pipeline, lineage.load())
