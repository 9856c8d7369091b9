"""The apply code location: the deploy branch's applies, Materialize and drift checks, with the apply service
account (see definitions.py)."""

import dagster as dg

from .definitions import location


@dg.definitions  # type: ignore[arg-type]  # a RepositoryDefinition is loaded too (when reconstructed)
def defs() -> dg.Definitions | dg.RepositoryDefinition:
    return location("apply")
