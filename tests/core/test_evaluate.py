"""Static evaluation of Terragrunt path functions, as Terragrunt evaluates them."""

import hashlib
import posixpath

from pipelines_dagster.core.terragrunt.parse import parse_facts
from pipelines_dagster.core.terragrunt.traversal import UnitEvaluator
from pipelines_dagster.core.terragrunt.tree import TreeView


def evaluate(files: dict[str, str], unit: str, terraform: bool = False):
    blobs = {p: hashlib.sha1(c.encode()).hexdigest() for p, c in files.items()}
    contents = {blobs[p]: c.encode() for p, c in files.items()}
    dirs = {""}
    for p in files:
        d = posixpath.dirname(p)
        while d:
            dirs.add(d)
            d = posixpath.dirname(d)
    view = TreeView(blobs, dirs, lambda blob, path: parse_facts(contents[blob]))
    ev = UnitEvaluator(view)
    return ev.terraform_unit(unit) if terraform else ev.terragrunt_unit(unit)


def messages(result, severity):
    return [f"{p.file}:{p.line}: {p.message}" for p in result.problems if p.severity == severity]


def test_find_in_parent_folders_without_name_and_with_fallback():
    result = evaluate({
        "terragrunt.hcl": "",
        "a/b/terragrunt.hcl": 'include {\n  path = find_in_parent_folders()\n}\n'
                              'locals {\n  x = read_terragrunt_config('
                              'find_in_parent_folders("nope.hcl", "a/c.hcl"))\n}\n',
        "a/c.hcl": "",
    }, "a/b")
    assert result.included == {"terragrunt.hcl"}
    assert "a/c.hcl" not in result.reads  # fallback is relative to the unit: a/b/a/c.hcl, which does not exist
    assert messages(result, "error") == [
        "a/b/terragrunt.hcl:5: read_terragrunt_config(): a/b/a/c.hcl does not exist"]


def test_find_in_parent_folders_starts_above_the_unit_folder():
    result = evaluate({"x/env.hcl": "", "x/u/env.hcl": "",
                       "x/u/terragrunt.hcl":
                           'locals {\n  e = read_terragrunt_config(find_in_parent_folders("env.hcl"))\n}\n'},
                      "x/u")
    assert result.reads == {"x/env.hcl"}


def test_included_file_functions_refer_to_the_including_unit():
    root = ('locals {\n  env = read_terragrunt_config(find_in_parent_folders("env.hcl"))\n'
            '  here = get_terragrunt_dir()\n'
            '  cfg = file("${get_terragrunt_dir()}/unit.yaml")\n'
            '  parent = file("${get_parent_terragrunt_dir()}/common.yaml")\n}\n')
    files = {"root.hcl": root, "common.yaml": "", "p/env.hcl": "", "q/env.hcl": "",
             "p/u/unit.yaml": "",
             "p/u/terragrunt.hcl": 'include "root" {\n  path = find_in_parent_folders("root.hcl")\n}\n'}
    result = evaluate(files, "p/u")
    assert result.reads == {"root.hcl", "p/env.hcl", "p/u/unit.yaml", "common.yaml"}


def test_read_terragrunt_config_evaluates_in_the_read_files_folder():
    files = {"a/b/terragrunt.hcl": 'locals {\n  r = read_terragrunt_config("../region/region.hcl")\n}\n',
             "a/region/region.hcl":
                 'locals {\n  acct = read_terragrunt_config(find_in_parent_folders("account.hcl"))\n}\n',
             "a/account.hcl": "", "a/region/account.hcl": ""}
    assert evaluate(files, "a/b").reads == {"a/region/region.hcl", "a/account.hcl"}


def test_repo_root_functions_and_relative_paths():
    unit = ('locals {\n  a = file("${get_repo_root()}/cfg/a.json")\n'
            '  b = jsondecode(file("${get_path_to_repo_root()}/cfg/b.json"))\n'
            '  c = file("${get_repo_root()}/cfg/${get_path_from_repo_root()}.yaml")\n}\n')
    files = {"cfg/a.json": "", "cfg/b.json": "", "cfg/x/y.yaml": "", "x/y/terragrunt.hcl": unit}
    assert evaluate(files, "x/y").reads == {"cfg/a.json", "cfg/b.json", "cfg/x/y.yaml"}


def test_path_relative_to_and_from_include():
    root = ('locals {\n  per_unit = file("${get_parent_terragrunt_dir()}/vars/${path_relative_to_include()}.tfvars")\n'
            '  back = file("${get_terragrunt_dir()}/${path_relative_from_include()}/shared.tfvars")\n}\n')
    files = {"live/root.hcl": root, "live/vars/dev/app.tfvars": "", "live/shared.tfvars": "",
             "live/dev/app/terragrunt.hcl": 'include "root" {\n  path = find_in_parent_folders("root.hcl")\n}\n'}
    assert evaluate(files, "live/dev/app").reads == {"live/root.hcl", "live/vars/dev/app.tfvars", "live/shared.tfvars"}


def test_several_named_includes_and_exposed_locals_in_paths():
    files = {
        "root.hcl": "",
        "_envcommon/app.hcl": 'locals {\n  module = "app"\n}\n',
        "modules/app/main.tf": "",
        "e/app/terragrunt.hcl": (
            'include "root" {\n  path = find_in_parent_folders("root.hcl")\n}\n'
            'include "envcommon" {\n  path = "${dirname(find_in_parent_folders("root.hcl"))}/_envcommon/app.hcl"\n'
            '  expose = true\n}\n'
            'terraform {\n  source = "${get_repo_root()}/modules//${include.envcommon.locals.module}"\n}\n'),
    }
    result = evaluate(files, "e/app")
    assert result.included == {"root.hcl", "_envcommon/app.hcl"}
    assert result.module_dirs == {"modules/app"}
    assert result.problems == []


def test_locals_interpolation_and_string_functions():
    unit = ('locals {\n  name = "Net"\n  env = lower(local.name)\n'
            '  path = format("%s/%s.hcl", "../conf", local.env)\n'
            '  cfg = read_terragrunt_config(local.path)\n'
            '  other = read_terragrunt_config(replace("../conf/X.hcl", "X", "other"))\n}\n')
    files = {"conf/net.hcl": "", "conf/other.hcl": "", "u/terragrunt.hcl": unit}
    assert evaluate(files, "u").reads == {"conf/net.hcl", "conf/other.hcl"}


def test_dependency_and_dependencies_blocks():
    unit = ('dependency "vpc" {\n  config_path = "../vpc"\n}\n'
            'dependency "db" {\n  config_path = "${get_terragrunt_dir()}/../db"\n}\n'
            'dependencies {\n  paths = ["../iam", "${get_repo_root()}/shared/dns"]\n}\n')
    files = {"e/vpc/terragrunt.hcl": "", "e/db/terragrunt.hcl": "", "e/iam/terragrunt.hcl": "",
             "shared/dns/terragrunt.hcl": "", "e/app/terragrunt.hcl": unit}
    assert set(evaluate(files, "e/app").dependencies) == {"e/vpc", "e/db", "e/iam", "shared/dns"}


def test_dependency_declared_in_an_included_file_resolves_from_the_unit():
    common = 'dependency "vpc" {\n  config_path = "${get_terragrunt_dir()}/../vpc"\n}\n'
    files = {"_envcommon/app.hcl": common, "e/app/terragrunt.hcl":
             'include "c" {\n  path = "${get_repo_root()}/_envcommon/app.hcl"\n}\n'}
    assert set(evaluate(files, "e/app").dependencies) == {"e/vpc"}


def test_module_blocks_followed_recursively_with_file_reads():
    files = {
        "live/net/main.tf": 'terraform {\n  backend "s3" {}\n}\nmodule "a" {\n  source = "../../modules/a"\n}\n'
                            'module "remote" {\n  source = "terraform-aws-modules/vpc/aws"\n}\n',
        "modules/a/main.tf": 'module "b" {\n  source = "../b"\n}\n',
        "modules/b/main.tf": 'locals {\n  policy = file("${path.module}/../../policies/b.json")\n}\n',
        "policies/b.json": "{}",
    }
    result = evaluate(files, "live/net", terraform=True)
    assert result.module_dirs == {"modules/a", "modules/b"}
    assert result.reads == {"policies/b.json"}


def test_unresolvable_path_is_a_warning_with_file_line_and_expression():
    unit = 'locals {\n  x = 1\n}\ninclude "root" {\n  path = "${get_env("TG_ROOT")}/root.hcl"\n}\n'
    result = evaluate({"u/terragrunt.hcl": unit}, "u")
    assert result.conservative
    warnings = messages(result, "warning")
    assert len(warnings) == 1
    assert warnings[0].startswith('u/terragrunt.hcl:5: cannot evaluate "${get_env("TG_ROOT")}/root.hcl" statically')
    assert "get_env" in warnings[0]


def test_unknown_values_outside_paths_are_ignored():
    unit = ('dependency "vpc" {\n  config_path = "../vpc"\n}\n'
            'inputs = {\n  id = dependency.vpc.outputs.id\n  who = get_aws_account_id()\n  e = get_env("X")\n}\n')
    result = evaluate({"e/vpc/terragrunt.hcl": "", "e/u/terragrunt.hcl": unit}, "e/u")
    assert not result.conservative and result.problems == []


def test_remote_sources_are_not_local_modules():
    unit = 'terraform {\n  source = "git::https://example.com/modules.git//vpc?ref=v1.2.0"\n}\n'
    result = evaluate({"u/terragrunt.hcl": unit}, "u")
    assert result.module_dirs == set() and result.problems == []


def test_missing_local_source_folder_is_an_error():
    result = evaluate({"u/terragrunt.hcl": 'terraform {\n  source = "../modules//gone"\n}\n'}, "u")
    assert messages(result, "error") == [
        "u/terragrunt.hcl:2: terraform source '../modules//gone': folder modules/gone does not exist"]


def test_read_past_the_repository_root_is_an_error():
    result = evaluate({"u/terragrunt.hcl": 'locals {\n  x = file("../../secret.txt")\n}\n'}, "u")
    assert messages(result, "error") == ["u/terragrunt.hcl:2: file(): path '../../secret.txt' escapes the repository"]


def test_comparisons_and_negation_on_references():
    unit = ('locals {\n  env = "prod"\n  flag = false\n'
            '  cfg = read_terragrunt_config(local.env == "prod" && !local.flag ? "../p.hcl" : "../d.hcl")\n}\n')
    result = evaluate({"p.hcl": "", "d.hcl": "", "u/terragrunt.hcl": unit}, "u")
    assert result.reads == {"p.hcl"} and result.problems == []


def test_regex_named_groups_in_a_source():
    unit = ('locals {\n  parsed = regex(".*/live/(?P<env>[^/]+)/(?P<mod>[^/]+)$", get_terragrunt_dir())\n}\n'
            'terraform {\n  source = "${get_repo_root()}/modules//${local.parsed.mod}"\n}\n')
    result = evaluate({"modules/vpc/main.tf": "", "live/dev/vpc/terragrunt.hcl": unit}, "live/dev/vpc")
    assert result.module_dirs == {"modules/vpc"} and result.problems == []


def test_missing_file_read_is_a_warning_and_conservative():
    unit = 'locals {\n  o = try(yamldecode(file("${get_terragrunt_dir()}/override.yaml")), {})\n}\n'
    result = evaluate({"u/terragrunt.hcl": unit}, "u")
    assert result.conservative
    assert messages(result, "warning")[0].startswith(
        "u/terragrunt.hcl:2: file() reads u/override.yaml, which does not exist")


def test_absolute_path_pasted_after_a_folder_is_recovered():
    unit = 'inputs = yamldecode(file("${get_terragrunt_dir()}/${find_in_parent_folders("global.yaml")}"))\n'
    result = evaluate({"global.yaml": "", "a/b/terragrunt.hcl": unit}, "a/b")
    assert result.reads == {"global.yaml"} and result.problems == []


def test_template_escapes_are_literal():
    unit = 'locals {\n  x = read_terragrunt_config("../$${weird}.hcl")\n}\n'
    result = evaluate({"${weird}.hcl": "", "u/terragrunt.hcl": unit}, "u")
    assert result.reads == {"${weird}.hcl"}
