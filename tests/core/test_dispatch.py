"""How a plan's changes become steps: every change of a pull request at once, a push wave by wave (dependents of
failures skipped), the remaining waves in one step at the last stage, blocked runs, readable mapping keys."""

from pipelines_dagster.core.dispatch import Progress, next_stage, start
from pipelines_dagster.core.model import InfraChange, Outcome, Plan, RunSpec, Status


def change(unit, wave=0, deps=(), action="plan"):
    return InfraChange(type="ModuleChanged", unit=unit, account="dev", action=action, wave=wave,
                       depends_on=list(deps))


def plan(changes, event="pull_request", blocked=None):
    return Plan(spec=RunSpec(event=event, base="b", head="h"), changes=changes, blocked=blocked)


def units(items):
    return [[c.unit for c in item.changes] for item in items]


def finish(items, status=Status.SUCCEEDED, failing=()):
    return [Outcome.note(c, Status.FAILED if c.unit in failing else status) for i in items for c in i.changes]


CHAIN = [change("app", 2, ["db"], "apply"), change("net", 0, (), "apply"), change("db", 1, ["net"], "apply"),
         change("dns", 0, (), "apply")]


def test_a_pull_requests_changes_are_one_step_each_all_at_once():
    progress, items = start(plan([change("app", 2, ["db"]), change("net"), change("db", 1, ["net"])]), stages=8)
    assert units(items) == [["app"], ["net"], ["db"]]
    assert next_stage(progress, finish(items), stage=1, last_stage=7)[1] == []  # the stages have nothing to do


def test_a_push_runs_wave_by_wave_one_step_per_change():
    progress, items = start(plan(CHAIN, "push"), stages=8)
    assert sorted(units(items)) == [["dns"], ["net"]]
    progress, items = next_stage(progress, finish(items), stage=1, last_stage=7)
    assert units(items) == [["db"]]
    progress, items = next_stage(progress, finish(items), stage=2, last_stage=7)
    assert units(items) == [["app"]]
    progress, items = next_stage(progress, finish(items), stage=3, last_stage=7)
    assert items == [] and {o.status for o in progress.outcome_list()} == {Status.SUCCEEDED}


def test_dependents_of_a_failure_are_skipped_and_the_rest_goes_on():
    progress, items = start(plan(CHAIN + [change("web", 1, ["dns"], "apply")], "push"), stages=8)
    progress, items = next_stage(progress, finish(items, failing={"net"}), stage=1, last_stage=7)
    assert units(items) == [["web"]]  # db (after the failed net) is skipped, web (after dns) runs
    progress, items = next_stage(progress, finish(items), stage=2, last_stage=7)
    assert items == []  # app, after the skipped db, is skipped too
    by = {o.change.unit: o for o in progress.outcome_list()}
    assert (by["db"].status, by["app"].status) == (Status.SKIPPED, Status.SKIPPED)
    assert "net" in by["db"].message and "db" in by["app"].message


def test_waves_beyond_the_last_stage_run_in_one_step_in_order():
    chain = [change(f"u{i}", i, [f"u{i - 1}"] if i else [], "apply") for i in range(5)]
    progress, items = start(plan(chain, "push"), stages=3)
    assert units(items) == [["u0"]]
    progress, items = next_stage(progress, finish(items), stage=1, last_stage=2)
    assert units(items) == [["u1"]]
    progress, items = next_stage(progress, finish(items), stage=2, last_stage=2)
    assert units(items) == [["u2", "u3", "u4"]]  # the last stage: the remaining waves, in wave order
    assert items[0].key.endswith("_and_2_more")
    assert units(start(plan(chain, "push"), stages=1)[1]) == [["u0", "u1", "u2", "u3", "u4"]]


def test_a_blocked_plan_skips_everything():
    progress, items = start(plan([change("a"), change("b")], blocked="fork"), stages=8)
    assert items == [] and [o.status for o in progress.outcome_list()] == [Status.SKIPPED, Status.SKIPPED]


def test_mapping_keys_are_readable_safe_and_unique():
    keys = {change(u).key for u in ("a/b-c", "a/b_c", "class", "x" * 300, "prod/us-east-1/app")}
    assert len(keys) == 5 and all(k.replace("_", "").isalnum() and len(k) < 70 for k in keys)
    assert change("prod/us-east-1/app").key.startswith("prod_us_east_1_app_")


def test_progress_is_validated_when_built():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Progress(plan={"spec": {"event": "merge", "base": "b", "head": "h"}})
