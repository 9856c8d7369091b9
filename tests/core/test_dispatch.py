"""How a plan's changes become dispatch items: chains, crossing order, bins, blocked runs, skips."""

from pipelines_dagster.core.dispatch import mapping_key, skip_reason, work_items


def change(unit, wave=0, deps=(), action="plan"):
    return {"type": "ModuleChanged", "unit": unit, "account": "dev", "action": action, "triggers": [],
            "wave": wave, "depends_on": list(deps)}


def plan(changes, event="pull_request", blocked=None):
    return {"spec": {"event": event, "base": "b", "head": "h", "pr": None}, "changes": changes, "errors": [],
            "warnings": [], "blocked": blocked, "outcomes": {}}


def units(items):
    return [[c["unit"] for c in item] for item in items]


def test_chains_are_items_in_wave_order_and_independent_units_are_separate():
    items, skipped = work_items(plan([change("app", 2, ["db"]), change("net"), change("db", 1, ["net"]),
                                      change("dns")]))
    assert sorted(units(items)) == [["dns"], ["net", "db", "app"]] and skipped == []


def test_push_with_ordering_across_chains_is_one_item():
    # prod (deploy_order 2) waits for dev: its first wave is not 0
    items, _ = work_items(plan([change("dev/a"), change("prod/a", 1)], event="push"))
    assert units(items) == [["dev/a", "prod/a"]]
    items, _ = work_items(plan([change("dev/a"), change("prod/a", 1)], event="pull_request"))
    assert sorted(units(items)) == [["dev/a"], ["prod/a"]]


def test_more_chains_than_parallelism_share_items():
    items, _ = work_items(plan([change(f"u{i}") for i in range(10)]), max_items=4)
    assert len(items) == 4 and sorted(len(i) for i in items) == [2, 2, 3, 3]
    assert sorted(u for item in units(items) for u in item) == sorted(f"u{i}" for i in range(10))


def test_blocked_plan_skips_everything():
    items, skipped = work_items(plan([change("a"), change("b")], blocked="fork"))
    assert items == [] and [o["status"] for o in skipped] == ["skipped", "skipped"]


def test_dependents_of_failures_are_skipped_on_push_only():
    outcomes = {mapping_key(change("db")): {"change": change("db"), "status": "failed"}}
    app = change("app", 1, ["db"])
    assert "db" in skip_reason(plan([], event="push"), app, outcomes)
    assert skip_reason(plan([], event="pull_request"), app, outcomes) is None


def test_mapping_keys_are_safe_and_unique():
    keys = {mapping_key(change(u)) for u in ("a/b-c", "a/b_c", "class", "x" * 300)}
    assert len(keys) == 4 and all(k.replace("_", "").isalnum() and len(k) < 70 for k in keys)
