"""The asset lineage of the deploy branch: an asset per account and per unit (core.lineage decides which).

State-backed, as Dagster's own integrations are: the code server reads the deploy branch once when it loads
(from the local mirror: no network, no long wait), and run workers rebuild the very same graph from the
lineage Dagster hands them as reconstruction metadata instead of reading git again. When the deploy branch
moves, the asset graph sensor reloads the code location, which reads it anew.
"""

import warnings

import dagster as dg
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext, StateBackedDefinitionsLoader

from ..core.lineage import Lineage, account_key, group_name, read_lineage, unit_key

log = dg.get_dagster_logger("pipelines_dagster.lineage")
DEFAULT_LOCATION_NAME = "pipelines_dagster"


def lineage_specs(lineage: Lineage) -> list[dg.AssetSpec]:
    accounts = {a.name: a for a in lineage.accounts}
    specs = [dg.AssetSpec(key=account_key(a.name), group_name=group_name(a.name), kinds={"aws"},
                          description=f"AWS account {a.name} ({a.id}), from the accounts file of the deploy branch.",
                          metadata={"account": a.name, "account_id": a.id, "email": a.email or "",
                                    "deploy_order": a.deploy_order if a.deploy_order is not None else ""})
             for a in lineage.accounts]
    for unit in lineage.units:
        account = accounts.get(unit.account)
        deps = ([account_key(account.name)] if account else []) + [unit_key(d) for d in unit.depends_on]
        specs.append(dg.AssetSpec(
            key=unit_key(unit.path), deps=deps, group_name=group_name(unit.account), kinds={unit.kind, "aws"},
            description=f"{unit.kind.capitalize()} unit `{unit.path}`" + (f" of account {unit.account}"
                                                                          if unit.account else ""),
            metadata={"path": unit.path, "account": unit.account or "", "account_id": account.id if account else "",
                      "engine": unit.engine}))
    return specs


class DeployBranchLineage(StateBackedDefinitionsLoader[str]):
    """Reads the lineage when the code server loads; `defs_from_state` turns it into definitions, also when a run
    worker reconstructs them from the state the code server recorded."""

    def __init__(self, settings, dependents):
        """`dependents(lineage)`: the other definitions built from the lineage (jobs, resources, drift checks,
        sensors). `settings`: the deployment's (pipelines_dagster.settings.Settings)."""
        self.settings, self.dependents = settings, dependents
        self.location, self.deploy_branch = settings.repo_url, settings.deploy_branch

    @property
    def defs_key(self) -> str:
        return "pipelines_dagster/deploy_branch_lineage"

    def fetch_state(self) -> str:
        try:
            lineage = read_lineage(self.location, self.deploy_branch, cache_root=self.settings.cache_root,
                                   index_cache=self.settings.index_cache)
        except Exception as exc:  # the code location loads whatever happens to the repository
            lineage = Lineage(location=self.location, deploy_branch=self.deploy_branch,
                              notes=[f"reading the deploy branch failed: {type(exc).__name__}: {exc}"])
        for note in lineage.notes:
            log.warning(f"asset lineage: {note}")
        if lineage.commit:
            log.info(f"asset lineage: {len(lineage.accounts)} account(s), {len(lineage.units)} unit(s) at "
                     f"{lineage.deploy_branch} {lineage.commit[:12]}")
        return lineage.to_json()

    def defs_from_state(self, state: str) -> dg.Definitions:
        lineage = Lineage.from_json(state)
        return dg.Definitions.merge(dg.Definitions(assets=lineage_specs(lineage)), self.dependents(lineage))

    def load(self) -> dg.Definitions:
        with warnings.catch_warnings():  # reconstruction metadata is "preview"; it is what state-backed defs use
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return self.build_defs()


def code_location_name() -> str:
    """The name the loading harness gives this code location (for reloading it), else the configured one."""
    return DefinitionsLoadContext.get().code_location_name or DEFAULT_LOCATION_NAME
