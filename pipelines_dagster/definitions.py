"""The one place that assembles the Dagster code location: jobs, sensors and resources from the environment."""

import dagster as dg

from .defs.pipeline import infrastructure_pipeline
from .defs.resources import resources_from_env

defs = dg.Definitions(jobs=[infrastructure_pipeline], resources=resources_from_env())
