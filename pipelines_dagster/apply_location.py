"""The apply code location: the deploy branch's applies, Materialize and drift checks, with the apply service
account (see definitions.py)."""

import dagster as dg

from .definitions import location


@dg.definitions
def defs() -> dg.Definitions:
    return location("apply")
