"""The one place that assembles the Dagster code location: jobs, sensors and resources from the environment."""

import dagster as dg

from .defs.pipeline import infrastructure_pipeline
from .defs.resources import resources_from_env
from .defs.sensors import make_deploy_branch_sensor, make_pull_request_sensor, make_run_failure_sensor

defs = dg.Definitions(jobs=[infrastructure_pipeline],
                      sensors=[make_pull_request_sensor(infrastructure_pipeline),
                               make_deploy_branch_sensor(infrastructure_pipeline),
                               make_run_failure_sensor(infrastructure_pipeline)],
                      resources=resources_from_env())
