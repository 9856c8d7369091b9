"""The plan code location: pull requests' plans, with the plan service account (see definitions.py)."""

import dagster as dg

from .definitions import location


@dg.definitions
def defs() -> dg.Definitions:
    return location("plan")
