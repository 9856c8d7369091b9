"""Unit assets as levers: materializing units applies them at the deploy-branch tip (dependencies first, dependents
of a failure skipped, the apply role, the apply lock), refuses any other commit and never rolls a unit back; after
a drift check fails, materializing the unit makes it pass again, and with PIPELINES_RECONCILE_DRIFT Dagster's
automation does it by itself. The code location as Dagster loads it, real git, Terraform and the AWS emulator."""

import json
import uuid

import dagster as dg
import pytest

from pipelines_dagster.core import run_requests
from pipelines_dagster.core.dispatch import reconcile_changes
from pipelines_dagster.core.lineage import AccountNode, Lineage, UnitNode, unit_key
from pipelines_dagster.definitions import defs
from pipelines_dagster.demo.aws import backend_settings, state_bucket
from tests.conftest import ACCOUNTS, REGION, null_unit
from tests.defs.jobs import run_job
from tests.defs.test_drift import (
    BehindTerraformsBack,
    applied_units,
    env,  # noqa: F401 (a fixture)
    run_drift,
)

DEV = ACCOUNTS["dev"]


def key(unit: str) -> dg.AssetKey:
    return dg.AssetKey(unit_key(unit))


def materialize(instance, units: list[str], commit: str | None = None, checks: bool = False):
    """What the UI's Materialize does for the selected unit assets (with their drift checks, when `checks`)."""
    definitions = defs()
    job = definitions.resolve_implicit_global_asset_job_def()
    keys = {key(u) for u in units}
    check_keys = {dg.AssetCheckKey(k, "drift") for k in keys} if checks else set()
    config = {"ops": {"reconcile_units": {"config": {"commit": commit}}}} if commit else None
    return job.get_subset(asset_selection=keys, asset_check_selection=check_keys).execute_in_process(
        instance=instance, run_config=config, raise_on_error=False)


def materialized(result) -> dict[str, dict]:
    return {"/".join(e.asset_key.path[1:]): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}


def failure(result) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.event_specific_data.error.message


def reads_state_of(endpoint: str, unit: str) -> str:
    """Terraform that reads `unit`'s outputs from its state: it fails when that unit was never applied."""
    config = {"bucket": state_bucket(DEV), "key": f"{unit}/terraform.tfstate", "region": REGION,
              **backend_settings(endpoint)}
    lines = "".join(f"    {name} = {json.dumps(value)}\n" for name, value in config.items())
    return (f'\ndata "terraform_remote_state" "dependency" {{\n  backend = "s3"\n  config = {{\n{lines}  }}\n}}\n\n'
            'resource "null_resource" "after" {\n'
            '  triggers = { items = data.terraform_remote_state.dependency.outputs.items }\n}\n')


def unique(*names: str) -> dict[str, str]:
    """Unit paths of this test's own (the emulator's state is shared by the tests of a worker)."""
    tag = uuid.uuid4().hex[:6]
    return {name: f"dev/{name}-{tag}" for name in names}


def test_materializing_units_applies_them_at_the_tip_dependencies_first(repo, aws, env):  # noqa: F811
    u = unique("net", "db", "app", "broken", "worker")
    repo.commit({".pipelines.yml": f"deploy_branch: main\ndependencies:\n  {u['app']}: [{u['db']}]\n"
                                   f"  {u['db']}: [{u['net']}]\n  {u['worker']}: [{u['broken']}]\n"})
    tip = repo.commit({
        f"{u['net']}/main.tf": null_unit(aws.endpoint, u["net"]),
        f"{u['db']}/main.tf": null_unit(aws.endpoint, u["db"], extra=reads_state_of(aws.endpoint, u["net"])),
        f"{u['app']}/main.tf": null_unit(aws.endpoint, u["app"], extra=reads_state_of(aws.endpoint, u["db"])),
        f"{u['broken']}/main.tf": null_unit(aws.endpoint, u["broken"], extra='resource "nope" "x" {}\n'),
        f"{u['worker']}/main.tf": null_unit(aws.endpoint, u["worker"])})
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(instance, [u["app"], u["db"], u["net"], u["broken"], u["worker"]])
    assert not result.success  # the broken unit failed: the step fails after recording what was applied
    done = materialized(result)
    assert set(done) == {u["net"], u["db"], u["app"]}  # each read its dependency's state: applied after it
    app = done[u["app"]]
    assert (app["commit"].value, app["action"].value, app["status"].value, app["resources_added"].value) == (
        tip, "apply", "succeeded", 3)
    assert app["role_arn"].value == f"arn:aws:iam::{DEV}:role/pipelines-apply"
    rows = {(r.data["address"], r.data["action"]) for r in app["resource_changes"].value.records}
    assert rows == {("null_resource.item[0]", "create"), ("null_resource.item[1]", "create"),
                    ("null_resource.after", "create")}
    message = failure(result)
    assert f"{u['broken']}: failed" in message
    assert f"{u['worker']}: skipped: it depends on {u['broken']}" in message
    assert aws.state(DEV, f"{u['worker']}/terraform.tfstate") is None
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[run_requests.TAG_APPLY_LOCK] == run_requests.repo_identity(str(repo.path))  # queued with applies
    assert (tags[run_requests.TAG_SHA], tags[run_requests.TAG_EVENT], tags["pipelines/account-dev"]) == (
        tip, "push", "true")


def test_materializing_refuses_anything_but_the_tip_and_never_rolls_a_unit_back(repo, aws, env,  # noqa: F811
                                                                                 plugin_dir):
    instance = dg.DagsterInstance.ephemeral()
    order = unique("order")["order"]
    c1 = repo.commit({f"{order}/main.tf": null_unit(aws.endpoint, order, trigger="old")})
    c2 = repo.commit({f"{order}/main.tf": null_unit(aws.endpoint, order, trigger="new")})

    older = materialize(instance, [order], commit=c1)
    assert not older.success and materialized(older) == {}
    assert f"refused: {c1} ({c1[:12]}) is not the tip of the deploy branch main ({c2[:12]})" in failure(older)
    assert aws.state(DEV, f"{order}/terraform.tfstate") is None  # nothing applied

    by_name = materialize(instance, [order], commit="main")  # the tip, by the branch's name
    assert by_name.success and materialized(by_name)[order]["commit"].value == c2
    assert run_job(repo, {"plugin_dir": str(plugin_dir)}, "push", c1, c2, instance=instance).success

    repo.git("reset", "-q", "--hard", c1)  # the deploy branch rewritten to an older commit
    back = materialize(instance, [order])
    assert not back.success and materialized(back) == {}
    assert f"{order}: refused: {order} was already applied at {c2[:12]}" in failure(back)
    state = aws.state(DEV, f"{order}/terraform.tfstate")
    assert {i["attributes"]["triggers"]["version"] for r in state["resources"] for i in r["instances"]} == {"new"}


def test_drift_then_materialize_and_the_check_passes_and_automation_does_it_by_itself(
        repo, aws, make_executor, env, plugin_dir, tf_cli_config, tmp_path):  # noqa: F811
    env.setenv("PIPELINES_RECONCILE_DRIFT", "true")
    [unit] = applied_units(repo, aws, make_executor, 1)
    name = unit.split("/")[-1]
    instance = dg.DagsterInstance.ephemeral()
    definitions = defs()
    sensor = definitions.resolve_sensor_def("drift_reconcile_sensor")
    assert sensor.run_tags[run_requests.TAG_APPLY_LOCK] == run_requests.repo_identity(str(repo.path))

    def reconciled(cursor) -> tuple[set[str], object]:
        """What Dagster's automation asks to materialize now (as the sensor's tick evaluates it)."""
        evaluation = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor)
        return {"/".join(r.key.path[1:]) for r in evaluation.results if r.true_subset.size}, evaluation.cursor

    requested, cursor = reconciled(None)
    _, checks = run_drift(instance)
    assert checks[name].passed
    requested, cursor = reconciled(cursor)
    assert requested == set()  # a passing check asks for nothing

    BehindTerraformsBack(repo, aws, unit, plugin_dir, tf_cli_config, tmp_path).forget("null_resource.item[0]")
    _, checks = run_drift(instance)
    assert not checks[name].passed
    table = checks[name].metadata["resource_changes"].value
    assert [(r.data["address"], r.data["action"]) for r in table.records] == [("null_resource.item[0]", "create")]
    requested, cursor = reconciled(cursor)
    assert requested == {unit}  # the failed check asks for the unit's apply
    requested, cursor = reconciled(cursor)
    assert requested == set()  # once per failed check: an apply that fails is not retried in a loop

    result = materialize(instance, [unit], checks=True)  # the sensor's run, or the UI's Materialize
    assert result.success, failure(result)
    applied = materialized(result)[unit]
    assert [(r.data["address"], r.data["action"]) for r in applied["resource_changes"].value.records] == [
        ("null_resource.item[0]", "create")]
    [check] = result.get_asset_check_evaluations()  # the unit's drift check ran after the apply, in the same run
    assert check.passed and check.asset_key == key(unit)
    requested, cursor = reconciled(cursor)
    assert requested == set()
    _, checks = run_drift(instance)
    assert checks[name].passed


def test_without_the_setting_nothing_is_reconciled_by_itself(repo, aws, env):  # noqa: F811
    repo.commit({"dev/quiet/main.tf": null_unit(aws.endpoint, "dev/quiet")})
    definitions = defs()
    [spec] = [s for s in definitions.resolve_all_asset_specs() if s.key == key("dev/quiet")]
    assert spec.automation_condition is None
    assert "drift_reconcile_sensor" not in {s.name for s in definitions.sensors}
    assert definitions.resolve_assets_def(key("dev/quiet")).op.name == "reconcile_units"  # materializable


def lineage(*units: tuple[str, str | None, list[str]], orders: dict[str, int] | None = None) -> Lineage:
    accounts = sorted({a for _, a, _ in units if a})
    return Lineage(location="repo", deploy_branch="main", commit="c" * 40,
                   accounts=[AccountNode(a, "1" * 12, deploy_order=(orders or {}).get(a)) for a in accounts],
                   units=[UnitNode(p, "terraform", "terraform", a, deps) for p, a, deps in units])


def test_the_order_of_a_selection_looks_through_units_not_selected_and_honours_deploy_order():
    graph = lineage(("dev/net", "dev", []), ("dev/db", "dev", ["dev/net"]), ("dev/app", "dev", ["dev/db"]),
                    ("shared/dns", "shared", []), ("prod/app", "prod", []),
                    orders={"shared": 1, "dev": 2, "prod": 3})
    item, gone = reconcile_changes(graph, ["dev/app", "dev/net", "prod/app", "shared/dns", "dev/old"])
    waves = {c.unit: (c.wave, c.depends_on) for c in item.changes}
    assert waves == {"shared/dns": (0, []), "dev/net": (1, []), "dev/app": (2, ["dev/net"]),  # through dev/db
                     "prod/app": (3, [])}
    assert gone == ["dev/old"]
    assert {(c.action.value, c.type.value) for c in item.changes} == {("apply", "ModuleChanged")}
    assert (item.spec.event.value, item.spec.head, item.spec.base) == ("push", "c" * 40, "c" * 40)

    # a deploy_order that contradicts a dependency gives way to it
    graph = lineage(("shared/dns", "shared", ["dev/net"]), ("dev/net", "dev", []), orders={"shared": 1, "dev": 2})
    item, _ = reconcile_changes(graph, ["shared/dns", "dev/net"])
    assert {c.unit: c.wave for c in item.changes} == {"dev/net": 0, "shared/dns": 1}


@pytest.mark.parametrize("name", ["dev", "team x.io/ünits", "a" * 80])
def test_account_tags_are_valid_dagster_tag_keys(name):
    from dagster._utils.tags import is_valid_strict_tag_value

    tag = run_requests.account_tag(name)
    assert tag.startswith("pipelines/account-") and len(tag.split("/", 1)[1]) <= 63
    assert is_valid_strict_tag_value(tag.split("/", 1)[1])
    assert run_requests.account_tag(name) != run_requests.account_tag(name + "2")
