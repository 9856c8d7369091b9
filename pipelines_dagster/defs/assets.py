"""The asset lineage of the deploy branch: an asset per account and per unit (core.lineage decides which).

Unit assets are the control room's levers: materializing units (one, a selection, an account's group) applies them
at the deploy-branch tip with their accounts' apply roles, as the pipeline's apply steps do (the same executor,
dependencies first, dependents of a failure skipped), under the repository's apply lock, never rolling a unit
back to an older commit than it was last applied at; any other commit is refused. Account assets are what the
units depend on (the accounts file decides them): materializing an account's group applies its units. With
PIPELINES_RECONCILE_DRIFT, a unit whose drift check fails is applied by Dagster's automation, once per failure.

State-backed, as Dagster's own integrations are: the code server reads the deploy branch once when it loads
(from the local mirror: no network, no long wait), and run workers rebuild the very same graph from the
lineage Dagster hands them as reconstruction metadata instead of reading git again. When the deploy branch
moves, the asset graph sensor reloads the code location, which reads it anew.
"""

import warnings

import dagster as dg
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext, StateBackedDefinitionsLoader
from pydantic import Field

from ..core.lineage import AccountNode, Lineage, account_key, group_name, read_lineage, unit_key
from .execution import ChangeRunner

log = dg.get_dagster_logger("pipelines_dagster.lineage")
DEFAULT_LOCATION_NAME = "pipelines_dagster"
RECONCILE_OP = "reconcile_units"
RECONCILE_SENSOR = "drift_reconcile_sensor"
# a unit whose drift check has just failed (a new failed execution since the last evaluation), unless it is being
# applied already: one apply per failed check, so a unit that cannot be applied is not retried in a loop
DRIFT_CHECK_FAILED = (dg.AutomationCondition.any_checks_match(
    dg.AutomationCondition.check_failed() & dg.AutomationCondition.newly_updated()).with_label("drift check failed")
    & ~dg.AutomationCondition.in_progress()).with_label("reconcile a drifted unit")


class ReconcileConfig(dg.Config):
    commit: str | None = Field(None, description=(
        "The deploy-branch commit to apply, which must be its tip (a sha, or the branch's name). Empty: the tip. "
        "Anything else is refused: materializing a unit brings it to the deploy branch as it is now."))


def account_specs(lineage: Lineage) -> list[dg.AssetSpec]:
    return [dg.AssetSpec(key=account_key(a.name), group_name=group_name(a.name), kinds={"aws"},
                         description=f"AWS account {a.name} ({a.id}), from the accounts file of the deploy branch. "
                                     "Materializing its group applies its units.",
                         metadata={"account": a.name, "account_id": a.id, "email": a.email or "",
                                   "deploy_order": a.deploy_order if a.deploy_order is not None else ""})
            for a in lineage.accounts]


def unit_specs(lineage: Lineage, automation_condition: dg.AutomationCondition | None = None) -> list[dg.AssetSpec]:
    accounts: dict[str | None, AccountNode] = {a.name: a for a in lineage.accounts}
    specs = []
    for unit in lineage.units:
        account = accounts.get(unit.account)
        deps = ([account_key(account.name)] if account else []) + [unit_key(d) for d in unit.depends_on]
        specs.append(dg.AssetSpec(
            key=unit_key(unit.path), deps=deps, group_name=group_name(unit.account), kinds={unit.kind, "aws"},
            description=f"{unit.kind.capitalize()} unit `{unit.path}`" + (f" of account {unit.account}"
                                                                          if unit.account else "")
                        + ". Materializing applies it at the deploy-branch tip with the account's apply role.",
            metadata={"path": unit.path, "account": unit.account or "", "account_id": account.id if account else "",
                      "engine": unit.engine},
            skippable=True,  # a unit that fails, or is refused, is not materialized; the step then fails
            automation_condition=automation_condition))
    return specs


def lineage_assets(lineage: Lineage, reconcile_drift: bool = False) -> list:
    """The account assets, and the unit assets (one subsettable multi-asset whose step applies the selected
    units)."""
    specs = account_specs(lineage)
    if not lineage.units:
        return specs
    path_of = {dg.AssetKey(unit_key(u.path)): u.path for u in lineage.units}

    @dg.multi_asset(name=RECONCILE_OP, can_subset=True,
                    specs=unit_specs(lineage, DRIFT_CHECK_FAILED if reconcile_drift else None),
                    description="Applies the selected units at the deploy-branch tip with their accounts' apply "
                                "roles, dependencies first, under the repository's apply lock.")
    def reconcile_units(context: dg.AssetExecutionContext, config: ReconcileConfig,
                        changes: dg.ResourceParam[ChangeRunner]):
        yield from changes.materialize(context, sorted(path_of[k] for k in context.selected_asset_keys),
                                       config.commit)

    return specs + [reconcile_units]


def reconcile_sensor(lineage: Lineage, run_tags: dict, *, interval_s: int,
                     default_status: dg.DefaultSensorStatus) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the unit assets' automation condition (PIPELINES_RECONCILE_DRIFT); its runs carry the apply lock."""
    return dg.AutomationConditionSensorDefinition(
        RECONCILE_SENSOR, target=dg.AssetSelection.assets(*[unit_key(u.path) for u in lineage.units]),
        run_tags=run_tags, minimum_interval_seconds=interval_s, default_status=default_status,
        description="Applies a unit at the deploy-branch tip when its drift check has failed "
                    "(PIPELINES_RECONCILE_DRIFT), once per failed check.")


class DeployBranchLineage(StateBackedDefinitionsLoader[str]):
    """Reads the lineage when the code server loads; `defs_from_state` turns it into definitions, also when a run
    worker reconstructs them from the state the code server recorded."""

    def __init__(self, settings, dependents):
        """`dependents(lineage)`: the definitions built from the lineage (assets, jobs, resources, drift checks,
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
        return self.dependents(Lineage.from_json(state))

    def load(self) -> dg.Definitions:
        with warnings.catch_warnings():  # reconstruction metadata is "preview"; it is what state-backed defs use
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return self.build_defs()


def code_location_name() -> str:
    """The name the loading harness gives this code location (for reloading it), else the configured one."""
    return DefinitionsLoadContext.get().code_location_name or DEFAULT_LOCATION_NAME
