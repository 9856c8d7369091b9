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
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext, StateBackedDefinitionsLoader
from pydantic import Field

from ..core import dispatch as core
from ..core import watch
from ..core.lineage import AccountNode, Lineage, account_key, group_name, read_lineage, unit_key
from .pipeline import applied_commit, asset_metadata, retry_if_transient, transient_problems, wait_for_other_applies
from .resources import AccountCredentials, EngineResource, GitHubResource, InfraRepoResource, apply_lock

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


def lineage_assets(lineage: Lineage, account_keys: Sequence[str] = (), reconcile_drift: bool = False) -> list:
    """The account assets, and the unit assets (one subsettable multi-asset whose step applies the selected
    units); `account_keys`: the account resources the applies use."""
    specs = account_specs(lineage)
    if not lineage.units:
        return specs
    path_of = {dg.AssetKey(unit_key(u.path)): u.path for u in lineage.units}

    @dg.multi_asset(name=RECONCILE_OP, can_subset=True,
                    specs=unit_specs(lineage, DRIFT_CHECK_FAILED if reconcile_drift else None),
                    required_resource_keys={"infra_repo", "github", "engine", *account_keys},
                    description="Applies the selected units at the deploy-branch tip with their accounts' apply "
                                "roles, dependencies first, under the repository's apply lock.")
    def reconcile_units(context: dg.AssetExecutionContext, config: ReconcileConfig):
        units = sorted(path_of[k] for k in context.selected_asset_keys)
        yield from _reconcile(context, config, units)

    return specs + [reconcile_units]


def _reconcile(context: dg.AssetExecutionContext, config: ReconcileConfig, units: list[str]):
    from ..core.config import ConfigError
    from ..core.executor import prepare
    from ..integrations.git import GitError, resolve

    resources = context.resources
    infra_repo: InfraRepoResource = resources.infra_repo
    github: GitHubResource = resources.github
    engine: EngineResource = resources.engine
    try:
        repo = infra_repo.git_dir(fetch=True)
        lineage = read_lineage(infra_repo.location, infra_repo.deploy_branch, cache_root=Path(infra_repo.cache_dir),
                               index_cache=infra_repo.index_cache_dir)
        if lineage.commit is None or (not lineage.units and lineage.notes):
            raise GitError("; ".join(lineage.notes) or "no deploy branch")
        branch, tip = lineage.deploy_branch, lineage.commit
        asked = resolve(repo, config.commit) if config.commit else tip
    except GitError as exc:
        raise dg.Failure(description=f"cannot read the deploy branch: {exc}") from None
    if asked != tip:
        raise dg.Failure(description=f"refused: {config.commit} ({asked[:12]}) is not the tip of the deploy branch "
                                     f"{branch} ({tip[:12]}); materializing applies the tip and nothing else")
    item, gone = core.reconcile_item(lineage, units)
    context.instance.add_run_tags(context.run.run_id, watch.run_tags(
        "push", tip, accounts=[c.account for c in item.changes]))
    wait_for_other_applies(context, engine, apply_lock(github, infra_repo))
    context.log.info(f"applying {len(item.changes)} unit(s) at {branch} {tip[:12]}")
    try:
        prepared = prepare(repo, tip, deploy_branch=infra_repo.deploy_branch, settings=engine.settings(),
                           location=infra_repo.location, provider_factory=lambda trusted: AccountCredentials(
                               resources, trusted.branch, trusted.config.roles))
    except ConfigError as exc:
        raise dg.Failure(description=f"configuration of the deploy branch: {exc}") from None
    for notice in prepared.notices:
        context.log.warning(notice)
    outcomes = core.run_item(item, prepared, repo, engine.max_parallel,
                             applied_commit=lambda unit: applied_commit(context.instance, unit))
    retry_if_transient(context, engine, transient_problems(outcomes))
    for o in outcomes:
        (context.log.info if o.status.ok else context.log.error)(f"{o.change.name}: {_said(o)}")
    for _, unit, metadata in core.asset_events(outcomes, item.spec, prepared.on_deploy_branch):
        yield dg.MaterializeResult(asset_key=unit_key(unit), metadata=asset_metadata(metadata))
    problems = [f"{unit}: not a unit of {branch} at {tip[:12]} (the deploy-branch run of the commit that removed "
                "it destroys it)" for unit in gone]
    problems += [f"{o.change.name}: {_said(o)}" for o in outcomes if not o.status.ok]
    if problems:
        raise dg.Failure(description="; ".join(p[:500] for p in problems))


def _said(outcome) -> str:
    text = outcome.message or outcome.status.label
    return text if text.startswith(outcome.status.label) else f"{outcome.status.label}: {text}"


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
