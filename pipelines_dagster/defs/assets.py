"""The asset lineage of the deploy branch: an asset per account and per unit (core.lineage decides which).

Unit assets are the control room's levers: materializing units (one, a selection, an account's group) applies them
at the deploy-branch tip with their accounts' apply roles, as the pipeline's apply steps do (the same executor,
dependencies first, dependents of a failure skipped), under the repository's apply lock, never rolling a unit
back to an older commit than it was last applied at; any other commit is refused. Account assets are what the
units depend on (the accounts file decides them): materializing an account's group applies its units. With
PIPELINES_RECONCILE_DRIFT, a unit whose drift check fails is applied by Dagster's automation, once per failure.

The code server reads the lineage once when it loads (defs/loading.py); when the deploy branch moves, the asset
graph sensor reloads the code location, which reads it anew.
"""

import dagster as dg
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext
from pydantic import Field

from ..core.lineage import AccountNode, Lineage, account_key, group_name, unit_key
from .execution import ChangeRunner

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


def code_location_name() -> str:
    """The name the loading harness gives this code location (for reloading it), else the configured one."""
    return DefinitionsLoadContext.get().code_location_name or DEFAULT_LOCATION_NAME
