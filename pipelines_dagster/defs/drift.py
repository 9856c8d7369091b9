"""Drift detection in Dagster: a `drift` asset check on every unit asset, the job that runs them (one step that
plans the selected units in parallel and records their checks), and its schedule. The decisions and the GitHub
issue are in core.drift.

Any subset of the checks can run (a single unit from its asset page, a path filter from the run config); the
issue always lists what the latest result of every unit's check says.
"""

from collections.abc import Iterator, Sequence
from functools import cache, partial

import dagster as dg
from pydantic import Field

from ..core import drift as core
from ..core.lineage import Lineage, group_name, unit_key
from .execution import ChangeRunner

CHECK_NAME = "drift"
JOB_NAME = "drift_detection"
OP_NAME = "drift_plans"
CHECKS_OP_PREFIX = "drift_checks_"
CHECKS_PER_OP = 400
SCHEDULE_NAME = "drift_schedule"
DEFAULT_CRON = "0 6 * * *"  # daily, 06:00 UTC


class DriftConfig(dg.Config):
    paths: list[str] = Field(default_factory=list, description="Units to check: fnmatch globs of unit paths (a "
                             "folder matches the units under it); empty checks every selected unit.")


def previous_findings(instance, lineage: Lineage, skip: set[str], check_name: str = CHECK_NAME
                      ) -> dict[str, core.Finding]:
    """The latest completed drift result of every unit not checked now (for the issue's complete list)."""
    keys = {dg.AssetCheckKey(dg.AssetKey(unit_key(u.path)), check_name): u.path
            for u in lineage.units if u.path not in skip}
    found = {}
    storage = instance.event_log_storage
    checked_by_a_run = cache(partial(_checked_by_a_run, instance))  # a run's many results: one lookup
    for key, summary in storage.get_asset_check_summary_records(list(keys)).items():
        record = summary.last_completed_check_execution_record if summary else None
        if record is not None and record.event is not None and not checked_by_a_run(record.event.run_id):
            # a result reported by hand (the UI, the API) says nothing of the unit: the latest a check run wrote
            record = next((r for r in storage.get_asset_check_execution_history(key, limit=20)
                           if r.event is not None and r.event.dagster_event is not None
                           and isinstance(r.event.dagster_event.event_specific_data, dg.AssetCheckEvaluation)
                           and checked_by_a_run(r.event.run_id)), None)
        if record is None or record.event is None or record.event.dagster_event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        if isinstance(evaluation, dg.AssetCheckEvaluation):
            metadata = dict(evaluation.metadata or {})
            table = metadata.pop("resource_changes", None)
            rows = [r.data for r in table.records] if isinstance(table, dg.TableMetadataValue) else []
            found[keys[key]] = core.Finding.from_metadata(
                keys[key], {k: getattr(v, "value", v) for k, v in metadata.items()}, rows)
    return found


def _checked_by_a_run(instance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id) if run_id else None
    return run is not None and run.job_name in (JOB_NAME, "__ASSET_JOB")


def make_drift_definitions(lineage: Lineage, *, cron: str = DEFAULT_CRON, paths: Sequence[str] = (),
                           tags: dict | None = None,
                           default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING
                           ) -> dg.Definitions:
    """The drift checks of `lineage`'s units (defined per account, at most CHECKS_PER_OP each: Dagster's asset job
    takes time quadratic in a check definition's size), and the job that runs them all in one step."""
    if not lineage.units:
        return dg.Definitions()
    by_key = {dg.AssetKey(unit_key(u.path)): u.path for u in lineage.units}

    def run(context, changes: ChangeRunner, units: list[str]) -> Iterator[dg.AssetCheckResult]:
        yield from changes.check_drift(context, lineage, units, CHECK_NAME)

    checks = [_unit_checks(name, keys, by_key, run) for name, keys in _check_groups(lineage)]

    @dg.op(name=OP_NAME, tags={"kind": "drift"},
           description="Plans the units at the deploy-branch head with `-detailed-exitcode` and records each "
                       "unit's drift check.")
    def drift_plans(context: dg.OpExecutionContext, config: DriftConfig, changes: dg.ResourceParam[ChangeRunner]):
        units = [p for p in sorted(by_key.values()) if core.matches(p, config.paths)]
        for result in run(context, changes, units):
            assert result.asset_key is not None
            context.log_event(dg.AssetCheckEvaluation(  # type: ignore[arg-type]  # it records check results too
                asset_key=result.asset_key, check_name=result.check_name or CHECK_NAME, passed=result.passed,
                metadata=result.metadata or {}, severity=result.severity, description=result.description))

    @dg.job(name=JOB_NAME, executor_def=dg.in_process_executor.configured({}, name="drift_in_process"),
            tags=tags or {}, description="Plans every unit at the deploy-branch head and records its drift check.")
    def drift_detection():
        drift_plans()

    try:
        schedule = dg.ScheduleDefinition(
            name=SCHEDULE_NAME, job=drift_detection, cron_schedule=cron, default_status=default_status,
            run_config={"ops": {OP_NAME: {"config": {"paths": list(paths)}}}},
            description=f"Drift detection ({cron}, PIPELINES_DRIFT_CRON)"
                        + (f" of {', '.join(paths)} (PIPELINES_DRIFT_PATHS)" if paths else ""))
    except dg.DagsterInvalidDefinitionError as exc:
        raise ValueError(f"PIPELINES_DRIFT_CRON={cron!r} is not a cron schedule of 5 fields: {exc}") from None
    return dg.Definitions(asset_checks=checks, jobs=[drift_detection], schedules=[schedule])


def _check_groups(lineage: Lineage) -> list[tuple[str, list[dg.AssetKey]]]:
    """(op name, unit asset keys): an account's units, in slices of at most CHECKS_PER_OP."""
    by_group: dict[str, list[dg.AssetKey]] = {}
    for unit in sorted(lineage.units, key=lambda u: u.path):
        by_group.setdefault(group_name(unit.account), []).append(dg.AssetKey(unit_key(unit.path)))
    return [(f"{CHECKS_OP_PREFIX}{group}" + (f"_{i // CHECKS_PER_OP + 1}" if i else ""), keys[i:i + CHECKS_PER_OP])
            for group, keys in sorted(by_group.items()) for i in range(0, len(keys), CHECKS_PER_OP)]


def _unit_checks(name: str, keys: list[dg.AssetKey], by_key: dict[dg.AssetKey, str], run):
    @dg.multi_asset_check(
        name=name, can_subset=True,
        specs=[dg.AssetCheckSpec(CHECK_NAME, asset=key, description=(
            "Plans the unit at the deploy-branch head with the plan role: passes when the plan is empty, fails "
            "(WARN) with the plan summary when reality differs from the code, fails (ERROR) when it cannot plan."))
            for key in keys],
        description="Drift detection of the selected units: plans them at the deploy-branch head with "
                    "`-detailed-exitcode`.")
    def unit_checks(context: dg.AssetCheckExecutionContext, changes: dg.ResourceParam[ChangeRunner]):
        yield from run(context, changes, sorted(by_key[k.asset_key] for k in context.selected_asset_check_keys))

    return unit_checks
