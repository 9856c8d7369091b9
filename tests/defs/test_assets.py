"""The asset lineage of the deploy branch, loaded as Dagster loads the code location: the fixture repository's
graph, a repository that is unset or not mirrored yet, names that need cleaning, dependency cycles, and run
workers rebuilding the graph the code server loaded."""

import logging

import dagster as dg
import pytest
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.reconstruct import (
    initialize_repository_def_from_pointer,
    reconstruct_repository_def_from_pointer,
)

from pipelines_dagster.definitions import defs
from tests.conftest import GitRepo
from tests.livefixture import make_live_repo

DEV, STAGE, PROD = "dev/us-east-1/dev", "dev/us-east-1/stage", "prod/us-east-1/prod"
LOCAL_UNIT = 'terraform {\n  backend "local" {}\n}\n\nresource "null_resource" "x" {}\n'


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("PIPELINES_GITHUB_REPO", "PIPELINES_DEPLOY_BRANCH", "PIPELINES_DRIFT_CRON", "PIPELINES_DRIFT_PATHS",
                "PIPELINES_UI_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def load(env, location) -> dg.Definitions:
    if location is None:
        env.delenv("PIPELINES_REPO_URL", raising=False)
    else:
        env.setenv("PIPELINES_REPO_URL", str(location))
    return defs()


def specs(definitions: dg.Definitions) -> dict[str, dg.AssetSpec]:
    return {s.key.to_user_string(): s for s in definitions.resolve_all_asset_specs()}


def deps(spec: dg.AssetSpec) -> set[str]:
    return {d.asset_key.to_user_string() for d in spec.deps}


def test_asset_graph_of_the_fixture_repository(env, tmp_path):
    live = make_live_repo(tmp_path / "live")
    head = live.git("rev-parse", "HEAD")
    live.git("checkout", "-q", "-b", "feature")
    live.commit({f"{DEV}/extra/main.tf": LOCAL_UNIT})  # not on the deploy branch: not an asset
    found = specs(load(env, live.path))

    units = {f"{DEV}/vpc", f"{DEV}/mysql", f"{DEV}/app", f"{STAGE}/vpc", f"{STAGE}/mysql", f"{PROD}/vpc",
             f"{PROD}/mysql", f"{PROD}/app", "prod/global/iam"}
    assert set(found) == {"accounts/dev", "accounts/prod"} | {f"units/{u}" for u in units}
    for env_path in (DEV, PROD):
        account = env_path.split("/")[0]
        assert deps(found[f"units/{env_path}/vpc"]) == {f"accounts/{account}"}
        assert deps(found[f"units/{env_path}/mysql"]) == {f"accounts/{account}", f"units/{env_path}/vpc"}
        assert deps(found[f"units/{env_path}/app"]) == {f"accounts/{account}", f"units/{env_path}/vpc",
                                                         f"units/{env_path}/mysql"}
    assert deps(found["units/prod/global/iam"]) == {"accounts/prod"}
    assert {k: s.group_name for k, s in found.items() if k.startswith("units/prod")} == {
        f"units/{u}": "prod" for u in units if u.startswith("prod")}
    assert found[f"units/{STAGE}/mysql"].group_name == "dev"
    mysql, iam, account = found[f"units/{PROD}/mysql"], found["units/prod/global/iam"], found["accounts/prod"]
    assert set(mysql.kinds) == {"terragrunt", "aws"} and set(iam.kinds) == {"terraform", "aws"}
    assert set(account.kinds) == {"aws"} and account.metadata["account_id"] == "222222222222"
    assert (mysql.metadata["path"], mysql.metadata["account_id"], mysql.metadata["engine"]) == (
        f"{PROD}/mysql", "222222222222", "terragrunt")
    assert iam.metadata["engine"] == "terraform"

    definitions = load(env, live.path)
    checks = {k.asset_key.to_user_string() for k in definitions.get_repository_def().asset_graph.asset_check_keys}
    assert checks == {f"units/{u}" for u in units}  # one drift check per unit
    assert definitions.resolve_schedule_def("drift_schedule").cron_schedule == "0 6 * * *"
    assert {s.name for s in definitions.sensors} >= {"asset_graph_sensor", "deploy_branch_sensor"}
    assert head == live.git("rev-parse", "main")


def test_unset_or_unmirrored_repository_loads_without_unit_assets_and_without_cloning(env, caplog, tmp_path):
    caplog.set_level(logging.WARNING)
    unset = load(env, None)
    assert specs(unset) == {}
    assert unset.resolve_job_def("infrastructure_plan") and unset.resolve_job_def("infrastructure_apply")
    assert "PIPELINES_REPO_URL is not set" in caplog.text

    caplog.clear()
    remote = load(env, "https://git.invalid/acme/infrastructure-live.git")  # never cloned while loading
    assert specs(remote) == {} and "not mirrored" in caplog.text
    assert not (tmp_path / "cache" / "mirrors").exists()
    assert [j.name for j in remote.resolve_all_job_defs() if j.name == "drift_detection"] == []


def test_names_are_cleaned_and_dependency_cycles_cut(env, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    repo = GitRepo(tmp_path / "live")
    repo.commit({"accounts.yml": 'team-x.io:\n  id: "333333333333"\n  email: x@example.com\n',
                 ".pipelines.yml": "dependencies:\n  team-x.io/a: [team-x.io/b]\n  team-x.io/b: [team-x.io/a]\n",
                 "team-x.io/a/main.tf": LOCAL_UNIT, "team-x.io/b/main.tf": LOCAL_UNIT,
                 "team-x.io/odd name/main.tf": LOCAL_UNIT})
    found = specs(load(env, repo.path))
    odd = next(k for k in found if "odd" in k)
    assert odd.startswith("units/team-x.io/odd_name_") and found[odd].metadata["path"] == "team-x.io/odd name"
    assert {s.group_name for s in found.values()} == {"team_x_io"}
    # a -> b -> a: one edge is left out, so that Dagster gets a graph it can load
    assert deps(found["units/team-x.io/a"]) | deps(found["units/team-x.io/b"]) == {
        "accounts/team-x.io", "units/team-x.io/b"}
    assert "closes a dependency cycle" in caplog.text


def test_run_workers_rebuild_the_graph_the_code_server_loaded(env, tmp_path):
    repo = GitRepo(tmp_path / "live")
    repo.commit({"stacks/alpha/main.tf": LOCAL_UNIT})
    env.setenv("PIPELINES_REPO_URL", str(repo.path))
    pointer = ModuleCodePointer("pipelines_dagster.definitions", "defs")

    loaded = initialize_repository_def_from_pointer(pointer)  # the code server
    repo.commit({"stacks/beta/main.tf": LOCAL_UNIT}, "the deploy branch moves on")
    rebuilt = reconstruct_repository_def_from_pointer(pointer, loaded.repository_load_data)  # a run worker

    def unit_keys(repository) -> set[str]:
        return {k.to_user_string() for k in repository.asset_graph.get_all_asset_keys()}

    assert unit_keys(rebuilt) == unit_keys(loaded) == {"units/stacks/alpha"}
    assert unit_keys(initialize_repository_def_from_pointer(pointer)) == {"units/stacks/alpha",
                                                                         "units/stacks/beta"}  # a reload follows
