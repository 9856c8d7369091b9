"""Change detection on a real git repository laid out like a Terragrunt infrastructure-live."""

import git
import pytest

from pipelines_dagster.core.model import Event
from pipelines_dagster.core.orchestrator import detect_changes
from tests.livefixture import make_live_repo, unit

PROD_MYSQL = "prod/us-east-1/prod/mysql"
PROD_APP = "prod/us-east-1/prod/app"
PROD_VPC = "prod/us-east-1/prod/vpc"
DEV = "dev/us-east-1/dev"
STAGE = "dev/us-east-1/stage"


@pytest.fixture
def live(tmp_path):
    return make_live_repo(tmp_path / "live")


def detect(repo, base="HEAD~1", head="HEAD", event="pull_request", cache_dir=None):
    return detect_changes(git.Repo(repo.path), base, head, Event(event), cache_dir=cache_dir)


def triples(change_set):
    return {(c.type.value, c.unit, c.action.value) for c in change_set.changes}


def by_unit(change_set):
    return {c.unit: c for c in change_set.changes}


def test_module_changed_is_exactly_the_edited_unit(live):
    live.commit({f"{PROD_MYSQL}/terragrunt.hcl": live.read(f"{PROD_MYSQL}/terragrunt.hcl") + "\n# bump\n"})
    result = detect(live)
    assert triples(result) == {("ModuleChanged", PROD_MYSQL, "plan")}
    change = result.changes[0]
    assert change.account == "prod" and change.triggers == [f"{PROD_MYSQL}/terragrunt.hcl"]
    assert result.errors == [] and result.warnings == []


def test_non_hcl_file_in_unit_folder_is_module_changed(live):
    live.commit({f"{DEV}/vpc/extra.auto.tfvars": 'cidr = "10.0.0.0/16"\n'})
    assert triples(detect(live, event="push")) == {("ModuleChanged", f"{DEV}/vpc", "apply")}


def test_module_added(live):
    live.commit({f"{DEV}/redis/terragrunt.hcl": unit("vpc")})
    assert triples(detect(live)) == {("ModuleAdded", f"{DEV}/redis", "plan")}
    assert triples(detect(live, event="push")) == {("ModuleAdded", f"{DEV}/redis", "apply")}


def test_module_deleted_is_destroyed_from_base(live):
    live.commit({f"{STAGE}/mysql/terragrunt.hcl": None})
    result = detect(live)
    assert triples(result) == {("ModuleDeleted", f"{STAGE}/mysql", "plan-destroy")}
    assert result.changes[0].account == "dev"
    assert triples(detect(live, event="push")) == {("ModuleDeleted", f"{STAGE}/mysql", "destroy")}


def test_rename_is_delete_plus_add(live):
    live.git("mv", f"{STAGE}/mysql", f"{STAGE}/postgres")
    live.commit()
    assert triples(detect(live, event="push")) == {("ModuleDeleted", f"{STAGE}/mysql", "destroy"),
                                                   ("ModuleAdded", f"{STAGE}/postgres", "apply")}


def test_envcommon_change_hits_every_unit_that_includes_it(live):
    live.commit({"_envcommon/mysql.hcl": live.read("_envcommon/mysql.hcl") + "\n# tune\n"})
    assert triples(detect(live)) == {("EnvCommonChanged", f"{DEV}/mysql", "plan"),
                                     ("EnvCommonChanged", f"{STAGE}/mysql", "plan"),
                                     ("EnvCommonChanged", PROD_MYSQL, "plan")}


def test_env_hcl_read_by_root_hcl_affects_only_units_below_it(live):
    # root.hcl reads find_in_parent_folders("env.hcl"), evaluated from the including unit, as Terragrunt does
    live.commit({f"{STAGE}/env.hcl": 'locals {\n  env = "staging"\n}\n'})
    assert triples(detect(live)) == {("HCLChanged", f"{STAGE}/vpc", "plan"),
                                     ("HCLChanged", f"{STAGE}/mysql", "plan")}


def test_account_hcl_affects_the_accounts_units(live):
    live.commit({"prod/account.hcl": 'locals {\n  account_name = "production"\n}\n'})
    assert triples(detect(live)) == {("HCLChanged", u, "plan") for u in (PROD_VPC, PROD_MYSQL, PROD_APP)}


def test_root_hcl_affects_every_terragrunt_unit_but_not_plain_terraform(live):
    live.commit({"root.hcl": live.read("root.hcl") + "\n# x\n"})
    units = {c.unit for c in detect(live).changes}
    assert "prod/global/iam" not in units
    assert units == {f"{e}/{m}" for e in (DEV, PROD_MYSQL.rsplit("/", 1)[0]) for m in ("vpc", "mysql", "app")} | {
        f"{STAGE}/vpc", f"{STAGE}/mysql"}


def test_module_source_changed_follows_modules_recursively(live):
    live.commit({"modules/security-group/main.tf": 'resource "null_resource" "sg2" {}\n'})
    assert triples(detect(live)) == {("ModuleSourceChanged", f"{DEV}/mysql", "plan"),
                                     ("ModuleSourceChanged", f"{STAGE}/mysql", "plan"),
                                     ("ModuleSourceChanged", PROD_MYSQL, "plan")}


def test_module_source_changed_for_plain_terraform_module_blocks(live):
    live.commit({"modules/iam-roles/main.tf": 'resource "null_resource" "roles2" {}\n'})
    assert triples(detect(live)) == {("ModuleSourceChanged", "prod/global/iam", "plan")}


def test_file_in_module_subfolder_is_module_source(live):
    live.commit({"modules/app/templates/user-data.sh": "#!/bin/sh\necho changed\n"})
    assert triples(detect(live)) == {("ModuleSourceChanged", f"{DEV}/app", "plan"),
                                     ("ModuleSourceChanged", PROD_APP, "plan")}


def test_file_read_with_yamldecode_counts(live):
    live.commit({"prod/config/app.yaml": "replicas: 5\n"})
    assert triples(detect(live)) == {("HCLChanged", PROD_APP, "plan")}


def test_one_entry_per_unit_with_all_triggers_and_first_type(live):
    live.commit({f"{PROD_MYSQL}/terragrunt.hcl": live.read(f"{PROD_MYSQL}/terragrunt.hcl") + "\n# a\n",
                 "_envcommon/mysql.hcl": live.read("_envcommon/mysql.hcl") + "\n# b\n",
                 "modules/security-group/main.tf": "# c\n"})
    prod = by_unit(detect(live))[PROD_MYSQL]
    assert prod.type.value == "ModuleChanged"
    assert prod.triggers == ["_envcommon/mysql.hcl", "modules/security-group/main.tf",
                             f"{PROD_MYSQL}/terragrunt.hcl"]
    dev = by_unit(detect(live))[f"{DEV}/mysql"]
    assert dev.type.value == "ModuleSourceChanged"
    assert dev.triggers == ["_envcommon/mysql.hcl", "modules/security-group/main.tf"]


def test_files_outside_infrastructure_change_nothing(live):
    live.commit({"README.md": "# docs\n", "docs/guide.md": "hi\n"})
    result = detect(live)
    assert result.changes == [] and result.errors == []


def test_ignore_globs_from_pipelines_yml(live):
    live.commit({".pipelines.yml": "ignore:\n  - 'dev/**'\n"}, "config")
    live.commit({f"{DEV}/vpc/terragrunt.hcl": unit("vpc") + "# x\n",
                 f"{PROD_VPC}/terragrunt.hcl": unit("vpc") + "# y\n"})
    assert triples(detect(live)) == {("ModuleChanged", PROD_VPC, "plan")}


def test_waves_follow_dependencies(live):
    live.commit({f"{PROD_VPC}/terragrunt.hcl": unit("vpc") + "# 1\n",
                 f"{PROD_MYSQL}/terragrunt.hcl": unit("mysql", ["vpc"]) + "# 2\n",
                 f"{PROD_APP}/x.auto.tfvars": "a = 1\n"})
    result = detect(live, event="push")
    units = by_unit(result)
    assert (units[PROD_VPC].wave, units[PROD_MYSQL].wave, units[PROD_APP].wave) == (0, 1, 2)
    assert units[PROD_MYSQL].depends_on == [PROD_VPC]
    assert units[PROD_APP].depends_on == [PROD_MYSQL, PROD_VPC]
    assert [c.unit for c in result.changes] == [PROD_VPC, PROD_MYSQL, PROD_APP]


def test_order_looks_through_unchanged_units(live):
    # app depends on mysql (unchanged) which depends on vpc: app still runs after vpc
    live.commit({f"{DEV}/vpc/a.tfvars": "a = 1\n", f"{DEV}/app/a.tfvars": "a = 1\n"})
    units = by_unit(detect(live))
    assert units[f"{DEV}/app"].wave == 1 and units[f"{DEV}/app"].depends_on == [f"{DEV}/vpc"]


def test_destroys_run_in_reverse_dependency_order_after_applies(live):
    live.commit({f"{DEV}/app/terragrunt.hcl": None, f"{DEV}/mysql/terragrunt.hcl": None,
                 f"{DEV}/vpc/b.tfvars": "b = 1\n"})
    units = by_unit(detect(live, event="push"))
    assert units[f"{DEV}/vpc"].wave == 0 and units[f"{DEV}/vpc"].action.value == "apply"
    assert units[f"{DEV}/app"].wave == 1 and units[f"{DEV}/app"].action.value == "destroy"
    assert units[f"{DEV}/mysql"].wave == 2 and units[f"{DEV}/mysql"].depends_on == [f"{DEV}/app"]


def test_deploy_order_on_push_only(live):
    live.commit({"modules/vpc/main.tf": "# v2\n"})
    push = by_unit(detect(live, event="push"))
    assert {u: c.wave for u, c in push.items()} == {f"{DEV}/vpc": 0, f"{STAGE}/vpc": 0, PROD_VPC: 1}
    pr = by_unit(detect(live))
    assert {c.wave for c in pr.values()} == {0}


def test_account_changes(live):
    accounts = live.read("accounts.yml")
    live.commit({"accounts.yml": accounts.replace("prod@example.com", "ops@example.com")
                 + 'sandbox:\n  id: "333333333333"\n  email: sb@example.com\n'})
    result = detect(live)
    assert triples(result) == {("AccountChanged", None, "validate"), ("AccountAdded", None, "validate")}
    assert {c.account for c in result.changes} == {"prod", "sandbox"}
    assert ("AccountAdded", None, "baseline") in triples(detect(live, event="push"))
    live.commit({"accounts.yml": accounts.replace("prod:", "production:")})
    result = detect(live)
    assert ("AccountDeleted", None, "validate") in triples(result)
    assert any("prod" in str(w) and "remain" in str(w) for w in result.warnings)
    # prod's units now belong to no account in accounts.yml
    assert any("'prod'" in str(e) and "not in accounts.yml" in str(e) for e in detect(live).errors) is False


def test_unit_of_unknown_account_is_an_error(live):
    live.commit({"sandbox/account.hcl": 'locals {\n  account_name = "sandbox"\n}\n',
                 "sandbox/us-east-1/region.hcl": 'locals {\n  aws_region = "us-east-1"\n}\n',
                 "sandbox/us-east-1/env.hcl": 'locals {\n  env = "sb"\n}\n',
                 "sandbox/us-east-1/app/terragrunt.hcl": unit("app")})
    result = detect(live)
    assert ("ModuleAdded", "sandbox/us-east-1/app", "plan") in triples(result)
    assert any("sandbox" in str(e) and "accounts.yml" in str(e) for e in result.errors)


def test_malformed_hcl_names_file_and_line(live):
    live.commit({f"{DEV}/vpc/terragrunt.hcl": 'include "root" {\n  path = find_in_parent_folders("root.hcl")\n\n'
                                              'inputs = {\n  a = \n}\n'})
    result = detect(live)
    assert result.errors, result.to_dict()
    assert str(result.errors[0]).startswith(f"{DEV}/vpc/terragrunt.hcl:")
    assert "syntax error" in str(result.errors[0])


def test_malformed_accounts_yml_names_file_and_line(live):
    live.commit({"accounts.yml": "dev:\n  id: \"111111111111\"\n  email: [unclosed\n"})
    result = detect(live)
    assert any(str(e).startswith("accounts.yml:") and "malformed YAML" in str(e) for e in result.errors)


def test_invalid_account_entries(live):
    live.commit({"accounts.yml": live.read("accounts.yml") + "bad/name:\n  id: \"444444444444\"\n"
                 "dup:\n  id: \"111111111111\"\nint:\n  id: 555555555555\n"})
    errors = [str(e) for e in detect(live).errors]
    assert any("'bad/name'" in e and "folder name" in e for e in errors)
    assert any("'dup'" in e and "already used" in e for e in errors)
    assert any("'int'" in e and "quoted string" in e for e in errors)
    assert all(e.startswith("accounts.yml:") for e in errors)


def test_added_or_changed_account_without_email_is_an_error(live):
    accounts = live.read("accounts.yml")
    live.commit({"accounts.yml": accounts.replace("  email: prod@example.com\n", "")
                 + 'sandbox:\n  id: "333333333333"\n'})
    errors = [str(e) for e in detect(live).errors]
    assert sorted(e for e in errors if "email is missing" in e) == [
        "accounts.yml:5: account 'prod': email is missing", "accounts.yml:8: account 'sandbox': email is missing"]
    live.commit({"accounts.yml": accounts + 'sandbox:\n  id: "333333333333"\n  email: sb@example.com\n'})
    assert detect(live).errors == []  # entries that the change does not touch are not judged


def test_dependency_cycle_is_named(live):
    live.commit({f"{DEV}/vpc/terragrunt.hcl": unit("vpc", ["app"])})
    result = detect(live)
    cycle = [str(e) for e in result.errors if "cycle" in str(e)]
    assert len(cycle) == 1
    assert f"{DEV}/app" in cycle[0] and f"{DEV}/vpc" in cycle[0] and f"{DEV}/mysql" in cycle[0]


def test_path_escaping_the_repository_is_an_error(live):
    live.commit({f"{DEV}/vpc/terragrunt.hcl": 'include "root" {\n  path = "../../../../../etc/root.hcl"\n}\n'})
    result = detect(live)
    assert any("escapes the repository" in str(e) and str(e).startswith(f"{DEV}/vpc/terragrunt.hcl:2")
               for e in result.errors)


def test_missing_included_file_is_an_error(live):
    live.commit({f"{DEV}/vpc/terragrunt.hcl": 'include "x" {\n  path = "../nope.hcl"\n}\n'})
    assert any("does not exist" in str(e) for e in detect(live).errors)


def test_unresolvable_expression_warns_and_is_conservative(live):
    legacy = f"{DEV}/legacy"
    live.commit({f"{legacy}/terragrunt.hcl": 'include "root" {\n  path = "${get_env("ROOT")}/root.hcl"\n}\n'},
                "legacy unit")
    live.commit({f"{DEV}/env.hcl": 'locals {\n  x = 1\n}\n'})
    result = detect(live)
    assert ("HCLChanged", legacy, "plan") in triples(result)
    warning = [str(w) for w in result.warnings if legacy in str(w)]
    assert warning and warning[0].startswith(f"{legacy}/terragrunt.hcl:2") and "get_env" in warning[0]
    live.commit({"prod/us-east-1/region.hcl": 'locals {\n  aws_region = "us-east-2"\n}\n'})
    assert legacy not in {c.unit for c in detect(live).changes}  # not below that folder


def test_deleted_closer_config_is_seen_from_base(live):
    # a closer env.hcl is removed: units now read the parent one; only the base analysis shows they change
    live.commit({"dev/us-east-1/dev/vpc-env/env.hcl": 'locals {\n  env = "x"\n}\n',
                 "dev/us-east-1/dev/vpc-env/net/terragrunt.hcl": unit("vpc")}, "nested env")
    live.commit({"dev/us-east-1/dev/vpc-env/env.hcl": None})
    assert triples(detect(live)) == {("HCLChanged", "dev/us-east-1/dev/vpc-env/net", "plan")}


def test_old_style_root_terragrunt_hcl_is_configuration(tmp_path):
    repo = make_live_repo(tmp_path / "live", {
        "terragrunt.hcl": 'remote_state {\n  backend = "s3"\n  config = { key = "${path_relative_to_include()}" }\n}\n',
        "accounts.yml": 'dev:\n  id: "111111111111"\n',
        "dev/app/terragrunt.hcl": 'include {\n  path = find_in_parent_folders()\n}\n',
        "dev/db/terragrunt.hcl": 'include {\n  path = find_in_parent_folders()\n}\n',
    })
    repo.commit({"terragrunt.hcl": repo.read("terragrunt.hcl") + "# x\n"})
    result = detect(repo)
    assert triples(result) == {("HCLChanged", "dev/app", "plan"), ("HCLChanged", "dev/db", "plan")}
    assert result.errors == []


def test_without_accounts_yml_units_have_no_account(tmp_path):
    repo = make_live_repo(tmp_path / "live", {"net/main.tf": 'terraform {\n  backend "local" {}\n}\n'})
    repo.commit({"net/main.tf": 'terraform {\n  backend "local" {}\n}\n# x\n'})
    result = detect(repo)
    assert triples(result) == {("ModuleChanged", "net", "plan")} and result.changes[0].account is None
    assert result.errors == []


def test_units_listed_in_pipelines_yml(tmp_path):
    repo = make_live_repo(tmp_path / "live", {"stacks/net/main.tf": 'resource "null_resource" "a" {}\n',
                                              ".pipelines.yml": "units:\n  - stacks/net\n"})
    repo.commit({"stacks/net/main.tf": 'resource "null_resource" "b" {}\n'})
    assert triples(detect(repo)) == {("ModuleChanged", "stacks/net", "plan")}


def test_bad_pipelines_yml_is_an_error(live):
    live.commit({".pipelines.yml": "deploy_brnch: main\n"})
    assert any(str(e).startswith(".pipelines.yml:1") and "deploy_brnch" in str(e) for e in detect(live).errors)


def test_cache_gives_identical_results_and_skips_work(live, tmp_path):
    from pipelines_dagster.core.orchestrator import Orchestrator
    live.commit({"_envcommon/app.hcl": live.read("_envcommon/app.hcl") + "# x\n",
                 f"{STAGE}/mysql/terragrunt.hcl": None})
    cache = tmp_path / "cache"
    cold = Orchestrator(git.Repo(live.path), cache)
    first = cold.detect("HEAD~1", "HEAD", Event.PUSH)
    assert cold.builder.stats["evaluated"] > 0
    warm = Orchestrator(git.Repo(live.path), cache)
    second = warm.detect("HEAD~1", "HEAD", Event.PUSH)
    assert warm.builder.stats["evaluated"] == 0
    assert second.to_dict() == first.to_dict() == detect(live, event="push").to_dict()
    # a new head re-evaluates only the unit whose inputs changed
    live.commit({f"{PROD_APP}/terragrunt.hcl": live.read(f"{PROD_APP}/terragrunt.hcl") + "# y\n"})
    again = Orchestrator(git.Repo(live.path), cache)
    third = again.detect("HEAD~1", "HEAD", Event.PULL_REQUEST)
    assert again.builder.stats["evaluated"] == 1
    assert third.to_dict() == detect(live).to_dict()


def test_damaged_cache_is_rebuilt(live, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    live.commit({f"{PROD_VPC}/terragrunt.hcl": unit("vpc") + "# x\n"})
    assert triples(detect(live, cache_dir=cache)) == {("ModuleChanged", PROD_VPC, "plan")}
    assert triples(detect(live, cache_dir=cache)) == {("ModuleChanged", PROD_VPC, "plan")}


def test_units_under_underscore_folders_other_than_envcommon(live):
    live.commit({"prod/_global/iam/terragrunt.hcl": unit("vpc"),
                 "prod/_global/region.hcl": 'locals {\n  aws_region = "us-east-1"\n}\n',
                 "prod/_global/env.hcl": 'locals {\n  env = "global"\n}\n'}, "global unit")
    live.commit({"prod/_global/iam/terragrunt.hcl": live.read("prod/_global/iam/terragrunt.hcl") + "# x\n"})
    assert triples(detect(live)) == {("ModuleChanged", "prod/_global/iam", "plan")}
    live.commit({"prod/account.hcl": 'locals {\n  account_name = "prod2"\n}\n'})
    assert "prod/_global/iam" in {c.unit for c in detect(live).changes}


def test_root_unit_owns_only_its_own_files(tmp_path):
    repo = make_live_repo(tmp_path / "live", {"main.tf": 'terraform {\n  backend "local" {}\n}\n',
                                              "app/terragrunt.hcl": "", "docs/readme.txt": "x\n"})
    repo.commit({"docs/readme.txt": "y\n", "app/terragrunt.hcl": "# x\n"})
    assert triples(detect(repo)) == {("ModuleChanged", "app", "plan")}
    repo.commit({"main.tf": 'terraform {\n  backend "local" {}\n}\n# y\n'})
    assert triples(detect(repo)) == {("ModuleChanged", "", "plan")}


def test_dependencies_declared_for_plain_terraform_units(tmp_path):
    backend = 'terraform {\n  backend "local" {}\n}\n'
    repo = make_live_repo(tmp_path / "live", {"net/main.tf": backend, "app/main.tf": backend, "db/main.tf": backend,
                                              ".pipelines.yml": "dependencies:\n  app: [db]\n  db: [net]\n"})
    repo.commit({p: backend + "# x\n" for p in ("net/main.tf", "app/main.tf", "db/main.tf")})
    units = by_unit(detect(repo))
    assert [(u, units[u].wave, units[u].depends_on) for u in ("net", "db", "app")] == [
        ("net", 0, []), ("db", 1, ["net"]), ("app", 2, ["db"])]
