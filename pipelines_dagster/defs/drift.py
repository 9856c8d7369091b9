"""Drift detection in Dagster: a `drift` asset check on every unit asset, the job that runs them (one step that
plans the selected units in parallel), and its schedule. The decisions and the GitHub issue are in core.drift.

Any subset of the checks can run (a single unit from its asset page, a path filter from the run config); the
issue always lists what the latest result of every unit's check says.
"""

import dataclasses
from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from ..core import drift as core
from ..core.lineage import Lineage, unit_key
from .pipeline import resource_table
from .resources import AccountCredentials, EngineResource, GitHubResource, InfraRepoResource

CHECK_NAME = "drift"
JOB_NAME = "drift_detection"
OP_NAME = "drift_plans"
SCHEDULE_NAME = "drift_schedule"
DEFAULT_CRON = "0 6 * * *"  # daily, 06:00 UTC


class DriftConfig(dg.Config):
    paths: list[str] = Field(default_factory=list, description="Units to check: fnmatch globs of unit paths (a "
                             "folder matches the units under it); empty checks every selected unit.")


def _previous_findings(instance, lineage: Lineage, skip: set[str]) -> dict[str, core.Finding]:
    """The latest completed drift result of every unit not checked now (for the issue's complete list)."""
    keys = {dg.AssetCheckKey(dg.AssetKey(unit_key(u.path)), CHECK_NAME): u.path
            for u in lineage.units if u.path not in skip}
    found = {}
    for key, summary in instance.event_log_storage.get_asset_check_summary_records(list(keys)).items():
        record = summary.last_completed_check_execution_record if summary else None
        evaluation = record.event.dagster_event.event_specific_data if record and record.event else None
        if evaluation is not None:
            metadata = {k: getattr(v, "value", v) for k, v in (evaluation.metadata or {}).items()}
            found[keys[key]] = core.Finding.from_metadata(keys[key], metadata)
    return found


def _metadata(finding: core.Finding) -> dict:
    """The finding's metadata, and its resource changes as a table (as on the unit's plans and applies)."""
    rows = [dict(zip(("address", "action"), r.rsplit(": ", 1), strict=True)) for r in finding.resources if ": " in r]
    return {**finding.to_metadata(), **({"resource_changes": resource_table(rows)} if rows else {})}


def make_drift_definitions(lineage: Lineage, *, cron: str = DEFAULT_CRON, paths: Sequence[str] = (),
                           tags: dict | None = None, account_keys: Sequence[str] = (),
                           default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING
                           ) -> dg.Definitions:
    """The drift checks of `lineage`'s units; their plans use the account resources `account_keys`."""
    if not lineage.units:
        return dg.Definitions()
    units = {u.path: u for u in lineage.units}
    by_key = {dg.AssetKey(unit_key(path)): path for path in units}

    @dg.multi_asset_check(
        name=OP_NAME, can_subset=True, required_resource_keys={"infra_repo", "github", "engine", *account_keys},
        specs=[dg.AssetCheckSpec(CHECK_NAME, asset=key, description=(
            "Plans the unit at the deploy-branch head with the plan role: passes when the plan is empty, fails "
            "(WARN) with the plan summary when reality differs from the code, fails (ERROR) when it cannot plan."))
            for key in by_key],
        description="Drift detection: plans the selected units at the deploy-branch head with `-detailed-exitcode`.")
    def drift_plans(context: dg.AssetCheckExecutionContext, config: DriftConfig):
        infra_repo: InfraRepoResource = context.resources.infra_repo
        github: GitHubResource = context.resources.github
        engine: EngineResource = context.resources.engine
        from ..core.config import ConfigError
        from ..core.executor import prepare
        from ..core.repo_config import deploy_branch
        from ..integrations.git import GitError, resolve

        selected = {by_key[k.asset_key] for k in context.selected_asset_check_keys}
        todo = {p: units[p].account for p in sorted(selected) if core.matches(p, config.paths)}
        try:
            repo = infra_repo.git_dir(fetch=True)
            branch = deploy_branch(repo, infra_repo.deploy_branch)
            head = resolve(repo, f"refs/heads/{branch}")
        except GitError as exc:
            raise dg.Failure(description=f"cannot read the deploy branch: {exc}") from None
        context.log.info(f"planning {len(todo)} unit(s) at {branch} {head[:12]}")
        try:
            prepared = prepare(repo, head, deploy_branch=branch, location=infra_repo.location,
                               settings=dataclasses.replace(engine.settings(), detailed_exitcode=True),
                               provider_factory=lambda trusted: AccountCredentials(
                                   context.resources, trusted.branch, trusted.config.roles))
            findings = core.check_units(prepared, repo, head, todo, engine.max_parallel)
        except ConfigError as exc:
            findings = [core.Finding(p, core.UNCHECKED, a, head, message=f"configuration: {exc}")
                        for p, a in todo.items()]
        if not github.local_mode:
            current = {f.unit: f for f in findings}
            latest = {**_previous_findings(context.instance, lineage, set(current)), **current}
            outcome = core.update_issue(github.client(), core.open_findings(latest), deploy_branch=branch,
                                        commit=head, run_url=engine.run_url(context.run.run_id))
            context.log.info(f"drift issue: {outcome}")
        for f in findings:
            level = context.log.info if f.passed else context.log.warning
            level(f"{f.unit}: {f.state}" + (f" ({f.summary_line()})" if f.state == core.DRIFTED else
                                            f": {f.message}" if f.state == core.UNCHECKED else ""))
            yield dg.AssetCheckResult(
                asset_key=dg.AssetKey(unit_key(f.unit)), check_name=CHECK_NAME, passed=f.passed,
                severity=dg.AssetCheckSeverity.ERROR if f.state == core.UNCHECKED else dg.AssetCheckSeverity.WARN,
                metadata=_metadata(f),
                description={core.CLEAN: "the plan is empty", core.GONE: f.message,
                             core.DRIFTED: f"drifted: {f.summary_line()}",
                             core.UNCHECKED: "the plan could not run"}[f.state])

    job = dg.define_asset_job(JOB_NAME, selection=dg.AssetSelection.checks(drift_plans),
                              executor_def=dg.in_process_executor, tags=tags or {},
                              description="Plans every unit at the deploy-branch head and records its drift check.")
    try:
        schedule = dg.ScheduleDefinition(
            name=SCHEDULE_NAME, job=job, cron_schedule=cron, default_status=default_status,
            run_config={"ops": {OP_NAME: {"config": {"paths": list(paths)}}}},
            description=f"Drift detection ({cron}, PIPELINES_DRIFT_CRON)"
                        + (f" of {', '.join(paths)} (PIPELINES_DRIFT_PATHS)" if paths else ""))
    except dg.DagsterInvalidDefinitionError as exc:
        raise ValueError(f"PIPELINES_DRIFT_CRON={cron!r} is not a cron schedule of 5 fields: {exc}") from None
    return dg.Definitions(asset_checks=[drift_plans], jobs=[job], schedules=[schedule])
