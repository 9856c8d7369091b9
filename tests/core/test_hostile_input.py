"""Change detection stays bounded on hostile input: whoever can push a branch writes every file it reads.

Each attack ends within seconds with an error or warning naming file and line, never a traceback, an internal
error or unbounded memory. Timings are asserted loosely (HOSTILE_S): they prove that nothing hangs, not speed.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

from pipelines_dagster.core.detection_process import detect_changes_bounded
from pipelines_dagster.core.model import Event, UnitKind
from pipelines_dagster.core.orchestrator import detect_changes
from pipelines_dagster.core.repo_files import ConfigError, load_accounts, load_pipelines_config
from pipelines_dagster.core.terragrunt import parse
from pipelines_dagster.integrations.git import GitError
from pipelines_dagster.integrations.git_tree import read_tree
from tests.core.test_evaluate import evaluate, messages
from tests.livefixture import make_live_repo, unit

HOSTILE_S = 20.0
ACCOUNTS = 'prod:\n  id: "222222222222"\n  email: prod@example.com\n'
BACKEND = 'terraform {\n  backend "s3" {}\n}\n'


def detect(repo, tmp_path, event="pull_request", base="HEAD~1", head="HEAD"):
    started = time.monotonic()
    result = detect_changes(git.Repo(repo.path), base, head, Event(event), cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < HOSTILE_S
    return result


def run_cli(repo, tmp_path, *extra):
    proc = subprocess.run([sys.executable, "-m", "pipelines_dagster.cli", "changes", "--repo", str(repo.path),
                           "--base", "HEAD~1", "--head", "HEAD", "--event", "pull_request", *extra],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PIPELINES_CACHE_DIR=str(tmp_path / "cli-cache")))
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr + proc.stdout
    return proc


def strings(problems) -> list[str]:
    return [str(p) for p in problems]


def repo_with(tmp_path, files: dict[str, str], change: dict[str, str | None]):
    repo = make_live_repo(tmp_path / "live", files)
    repo.commit(change)
    return repo


def link(repo, rel: str, target: str) -> None:
    path = repo.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    os.symlink(target, path)


# ---- 1. YAML anchors and aliases, huge configuration files ---------------------------------------------------------

BILLION_LAUGHS = 'lol0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


def test_yaml_alias_bomb_in_accounts_is_an_error_naming_file_and_line(tmp_path):
    repo = repo_with(tmp_path, {"accounts.yml": ACCOUNTS, "prod/app/main.tf": BACKEND},
                     {"accounts.yml": ACCOUNTS + BILLION_LAUGHS})
    result = detect(repo, tmp_path)
    assert "accounts.yml:4: YAML anchors and aliases (&name, *name) are not allowed: write the values out" \
        in strings(result.errors)
    proc = run_cli(repo, tmp_path)
    assert proc.returncode == 1
    assert any(e.startswith("accounts.yml:4: YAML anchors") for e in json.loads(proc.stdout)["errors"])


def test_yaml_alias_bomb_in_pipelines_config_is_an_error_naming_file_and_line(tmp_path):
    repo = repo_with(tmp_path, {"prod/app/main.tf": BACKEND},
                     {".pipelines.yml": "deploy_branch: main\nignore: &x [a]\n", "prod/app/main.tf": BACKEND + "#\n"})
    assert ".pipelines.yml:2: YAML anchors and aliases (&name, *name) are not allowed: write the values out" \
        in strings(detect(repo, tmp_path).errors)
    with pytest.raises(ConfigError) as raised:
        load_pipelines_config(BILLION_LAUGHS)
    assert str(raised.value) == ".pipelines.yml:1: YAML anchors and aliases (&name, *name) are not allowed: " \
                                "write the values out"


def test_yaml_merge_keys_deep_nesting_huge_numbers_and_huge_files_are_refused():
    def error(text: str) -> str:
        with pytest.raises(ConfigError) as raised:
            load_accounts(text, "accounts.yml")
        return str(raised.value)
    assert error('base: {email: a@b}\nprod:\n  <<: *base\n') == \
        "accounts.yml:3: YAML anchors and aliases (&name, *name) are not allowed: write the values out"
    assert error("prod:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60))) == \
        "accounts.yml:33: nested more than 32 levels deep"
    assert error("prod:\n  id: " + "1" * 5000 + "\n").startswith("accounts.yml: malformed YAML: Exceeds the limit")
    started = time.monotonic()
    assert error(ACCOUNTS * 200_000) == f"accounts.yml: is {len(ACCOUNTS) * 200_000:,} characters long; " \
                                        "configuration files are limited to 4,194,304"
    assert time.monotonic() - started < HOSTILE_S


# ---- 2. values that double in size ---------------------------------------------------------------------------------

def doubling(local: str, seed: str, step: str, levels: int = 60) -> str:
    lines = [f"  {local}0 = {seed}"] + [f"  {local}{i} = {step.format(prev=f'local.{local}{i - 1}')}"
                                        for i in range(1, levels + 1)]
    return "locals {\n" + "\n".join(lines) + "\n}\n"


@pytest.mark.parametrize("local, seed, step, why", [
    ("s", '"xxxx"', '"${{{prev}}}${{{prev}}}"', "local.s18 at u/terragrunt.hcl:20: a string of more than 1,000,000 "
                                                "characters"),
    ("n", "10", "{prev} * {prev}", "local.n8 at u/terragrunt.hcl:10: a number of more than 512 bits"),
    ("l", '["x"]', "concat({prev}, {prev})", "local.l19 at u/terragrunt.hcl:21: arguments of concat() larger than "
                                              "1,000,000 elements and characters"),
    ("m", '["x"]', "[{prev}, {prev}]", "local.m18 at u/terragrunt.hcl:20: a value larger than 1,000,000 elements "
                                       "and characters"),
])
def test_values_doubling_per_local_become_unknown_with_a_warning(tmp_path, local, seed, step, why):
    """60 levels would be 2^60 characters (or bits, or elements); evaluation stops at the limit and names it."""
    source = doubling(local, seed, step) + (
        f'include "root" {{\n  path = "${{local.{local}60}}.hcl"\n}}\n'
        f'locals {{\n  cfg = read_terragrunt_config(tostring(local.{local}60))\n}}\n')
    repo = repo_with(tmp_path, {"u/terragrunt.hcl": ""}, {"u/terragrunt.hcl": source})
    result = detect(repo, tmp_path)
    assert {(c.type.value, c.unit) for c in result.changes} == {("ModuleChanged", "u")}
    warnings = strings(result.warnings)
    assert f'u/terragrunt.hcl:65: cannot evaluate "${{local.{local}60}}.hcl" statically ({why}); the unit is ' \
           "planned for any .hcl change in its parent folders or in _envcommon" in warnings
    assert any(w.startswith(f"u/terragrunt.hcl:68: cannot evaluate read_terragrunt_config(tostring(local.{local}60))"
                            f" statically ({why})") for w in warnings)
    assert result.errors == []


def test_functions_that_could_multiply_their_input_are_bounded():
    big = "a" * 2000
    files = {"u/terragrunt.hcl": (
        "locals {\n"
        f'  big = "{big}"\n'
        '  parts = split(",", "' + ",".join(["b"] * 2000) + '")\n'
        "}\n"
        'include "a" {\n  path = replace(local.big, "", local.big)\n}\n'
        'include "b" {\n  path = join(local.big, local.parts)\n}\n'
        'include "c" {\n  path = replace(local.big, "/(a)/", "' + "$1" * 600 + '")\n}\n'
        'include "d" {\n  path = format("%s%s", local.big, local.big)\n}\n')}
    started = time.monotonic()
    result = evaluate(files, "u")
    assert time.monotonic() - started < HOSTILE_S
    warnings = messages(result, "warning")
    assert any(w.startswith("u/terragrunt.hcl:6: cannot evaluate replace(local.big, \"\", local.big) statically "
                            "(replace() failed: the result would be 4,004,000 characters (the limit is 1,000,000))")
               for w in warnings)
    assert any(w.startswith("u/terragrunt.hcl:9: cannot evaluate join(local.big, local.parts) statically (join() "
                            "failed: the result would be 4,000,000 characters") for w in warnings)
    assert any(w.startswith("u/terragrunt.hcl:12: cannot evaluate replace(local.big, \"/(a)/\", ") and
               "replace() failed: the result would be longer than 1,000,000 characters" in w for w in warnings)
    # format() of two 2,000-character strings is fine: it becomes a path that is not there
    assert f"u/terragrunt.hcl:15: included file u/{big}{big} does not exist"[:200] in \
        [e[:200] for e in messages(result, "error")]


# ---- 3. regular expressions run on RE2 -----------------------------------------------------------------------------

def test_regex_with_catastrophic_backtracking_runs_in_linear_time():
    text = "a" * 100_000 + "b"
    files = {"u/terragrunt.hcl": f'include {{\n  path = regex("^(a+)+$", "{text}")\n}}\n'}
    started = time.monotonic()
    result = evaluate(files, "u")
    assert time.monotonic() - started < HOSTILE_S
    [warning] = messages(result, "warning")
    assert warning.startswith('u/terragrunt.hcl:2: cannot evaluate regex("^(a+)+$", "aaaa')
    assert warning.endswith("... statically (regex() failed: pattern '^(a+)+$' does not match); the unit is planned "
                            "for any .hcl change in its parent folders or in _envcommon")


def test_regex_and_regex_replace_follow_terraform():
    files = {"envs/prod/env.hcl": "", "envs/prod/app/terragrunt.hcl": "",
             "u/terragrunt.hcl": (
                 'locals {\n  m = regex("^(?P<env>[a-z]+)-(?P<app>[a-z]+)$", "prod-app")\n'
                 '  env = replace("PROD", "/[A-Z]+/", "prod")\n}\n'
                 'include "env" {\n  path = "../envs/${local.m.env}/env.hcl"\n}\n'
                 'include "app" {\n  path = "../envs/${replace("app-prod", "/^([a-z]+)-(?P<e>[a-z]+)$/", "$${e}/$1")}'
                 '/terragrunt.hcl"\n}\n'
                 'locals {\n  bad = read_terragrunt_config(regex("(?=x)", "x"))\n}\n')}
    result = evaluate(files, "u")
    assert result.included == {"envs/prod/env.hcl", "envs/prod/app/terragrunt.hcl"}
    assert messages(result, "warning") == [
        'u/terragrunt.hcl:12: cannot evaluate read_terragrunt_config(regex("(?=x)", "x")) statically (regex() '
        "failed: invalid regular expression '(?=x)': invalid perl operator: (?=); the unit is planned for any .hcl "
        "change in its parent folders or in _envcommon"]


def test_regex_too_costly_for_its_text_is_refused():
    text = "ab" * 50_000
    result = evaluate({"u/terragrunt.hcl": f'include {{\n  path = regex("(a|b){{1000}}c", "{text}")\n}}\n'}, "u")
    assert "is too costly to evaluate" in messages(result, "warning")[0]


# ---- 4. deep nesting -----------------------------------------------------------------------------------------------

NESTINGS = {
    "parentheses": lambda n, leaf: "(" * n + leaf + ")" * n,
    "lists": lambda n, leaf: "[" * n + leaf + "]" * n,
    "objects": lambda n, leaf: "{a = " * n + leaf + "}" * n,
    "calls": lambda n, leaf: "lower(" * n + leaf + ")" * n,
    "operators": lambda n, leaf: "1 + " * n + leaf,
    "conditionals": lambda n, leaf: "true ? " * n + leaf + " : 1" * n,
}


@pytest.mark.parametrize("nesting", sorted(NESTINGS))
def test_expressions_nested_3000_levels_deep_become_unknown_with_a_warning(tmp_path, nesting):
    deep = NESTINGS[nesting](3000, '"root.hcl"')
    source = f'include {{\n  path = {deep}\n}}\nlocals {{\n  r = read_terragrunt_config({deep})\n}}\n'
    repo = repo_with(tmp_path, {"root.hcl": "", "u/terragrunt.hcl": source},
                     {"u/terragrunt.hcl": source + "# touched\n"})
    for _ in range(2):  # the second run reads the parsed facts back from the cache (marshal)
        result = detect(repo, tmp_path)
        assert {(c.type.value, c.unit) for c in result.changes} == {("ModuleChanged", "u")}
        warnings = strings(result.warnings)
        assert len(warnings) == 2
        assert warnings[0].startswith("u/terragrunt.hcl:2: cannot evaluate " + deep[:20])
        assert warnings[1].startswith("u/terragrunt.hcl:5: cannot evaluate read_terragrunt_config(" + deep[:20])
        if nesting not in ("lists", "objects"):  # a list is no path anyway
            assert "expression nested more than 64 levels deep at line 2 of u/terragrunt.hcl" in warnings[0]
    assert run_cli(repo, tmp_path).returncode == 0


def test_deep_expressions_through_locals_and_read_configs_stop_at_the_evaluation_depth():
    chain = "".join(f"  a{i} = lower(local.a{i + 1})\n" for i in range(3000))
    reads = {f"c/{i}.hcl": f'locals {{\n  v = read_terragrunt_config("{i + 1}.hcl").locals.v\n}}\n' for i in range(300)}
    files = {"u/terragrunt.hcl": f'locals {{\n{chain}  a3000 = "x"\n}}\ninclude {{\n  path = local.a0\n}}\n',
             "v/terragrunt.hcl": 'include {\n  path = read_terragrunt_config("../c/0.hcl").locals.v\n}\n',
             "c/300.hcl": 'locals {\n  v = "x"\n}\n', **reads}
    result = evaluate(files, "u")
    assert messages(result, "warning")[0].startswith(
        "u/terragrunt.hcl:3005: cannot evaluate local.a0 statically (local.a") and \
        "expressions nested more than 150 levels deep" in messages(result, "warning")[0]
    result = evaluate(files, "v")
    assert messages(result, "warning")[0].startswith("v/terragrunt.hcl:2: cannot evaluate "
                                                     'read_terragrunt_config("../c/0.hcl").locals.v statically')
    assert any(w.startswith("c/31.hcl:2: cannot evaluate read_terragrunt_config(\"32.hcl\") statically (more than 32 "
                            "configuration files read inside each other)") for w in messages(result, "warning"))


def test_evaluation_at_its_limits_fits_well_inside_the_recursion_limit():
    """The worst cases of nesting (calls in locals in configurations read in configurations read) need fewer than
    700 frames, so detection has room below Python's 1,000 inside Dagster's threads too."""
    calls = "locals {\n" + "".join(f"  a{i} = {'lower(' * 60}local.a{i + 1}{')' * 60}\n" for i in range(10))
    reads = {f"c/{i}.hcl": f'locals {{\n  v = {"lower(" * 50}read_terragrunt_config("{i + 1}.hcl").locals.v'
                           f'{")" * 50}\n}}\n' for i in range(50)}
    cases = [{"u/terragrunt.hcl": calls + '  a10 = "x"\n}\ninclude {\n  path = local.a0\n}\n'},
             {"c/50.hcl": 'locals {\n v = "x"\n}\n', **reads,
              "u/terragrunt.hcl": 'include {\n  path = read_terragrunt_config("../c/0.hcl").locals.v\n}\n'}]
    frame, depth = sys._getframe(), 0
    while frame:
        frame, depth = frame.f_back, depth + 1
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 700)
    try:
        results = [evaluate(files, "u") for files in cases]
    finally:
        sys.setrecursionlimit(limit)
    for result in results:
        assert "expressions nested more than 150 levels deep" in messages(result, "warning")[0]


def test_unclosed_nesting_and_garbage_are_syntax_errors():
    random.seed(7)
    garbage = "".join(random.choices('{}[]()"$%~ab=,.\n:?', k=parse.MAX_FILE_BYTES)).encode()
    for source in (b"locals {\n  a = 1\n  b = " + b"(" * 500_000 + b"\n}\n", garbage):
        started = time.monotonic()
        error = parse.parse_facts(source)["syntax_error"]
        assert time.monotonic() - started < HOSTILE_S
        assert error["message"].startswith("syntax error: ") and error["line"] >= 1


def test_files_larger_than_the_limit_are_an_error_without_parsing(tmp_path):
    huge = "locals {\n" + "  a = 1\n" * (parse.MAX_FILE_BYTES // 8) + "}\n"
    repo = repo_with(tmp_path, {"u/terragrunt.hcl": ""}, {"u/terragrunt.hcl": huge})
    result = detect(repo, tmp_path)
    assert strings(result.errors) == [f"u/terragrunt.hcl:1: file is {len(huge):,} bytes; change detection reads .hcl "
                                      f"and .tf files of at most {parse.MAX_FILE_BYTES:,} bytes"]


def test_a_file_of_nested_read_calls_is_converted_within_a_budget():
    source = b"locals {\n  a = " + b"file(" * 150_000 + b'"x"' + b")" * 150_000 + b"\n}\n"
    started = time.monotonic()
    facts = parse.parse_facts(source)
    assert time.monotonic() - started < HOSTILE_S
    # one site per call until the budget is spent, the last one saying so deep inside
    assert len(facts["reads"]) < 2 * parse.MAX_EXPRESSIONS // parse.MAX_EXPR_DEPTH
    innermost = facts["reads"][-1]["expr"]
    while innermost[0] == "call":
        innermost = innermost[2][0]
    assert innermost[2] == f"expression beyond the first {parse.MAX_EXPRESSIONS:,} expressions of the file at line 2"


def test_a_unit_with_many_problems_lists_the_first_ones(tmp_path):
    source = "locals {\n" + "".join(f'  a{i} = file(get_env("X{i}"))\n' for i in range(300)) + "}\n"
    result = evaluate({"u/terragrunt.hcl": source}, "u")
    warnings = messages(result, "warning")
    assert len(warnings) == 51
    assert warnings[-1] == "u/terragrunt.hcl:None: 250 more problems of this unit are not listed"


# ---- 5. detection as a whole, in a bounded child process -----------------------------------------------------------

def test_bounded_detection_equals_in_process_detection(tmp_path):
    repo = make_live_repo(tmp_path / "live")
    repo.commit({"prod/us-east-1/prod/mysql/terragrunt.hcl": unit("mysql", ["vpc"]) + "# bump\n",
                 "prod/global/iam/main.tf": repo.read("prod/global/iam/main.tf") + "# bump\n",
                 "_envcommon/vpc.hcl": repo.read("_envcommon/vpc.hcl") + "# bump\n"})
    for event in Event:
        in_process = detect_changes(git.Repo(repo.path), "HEAD~1", "HEAD", event, cache_dir=tmp_path / "c1")
        bounded = detect_changes_bounded(git.Repo(repo.path), "HEAD~1", "HEAD", event, cache_dir=tmp_path / "c2")
        assert bounded == in_process
        assert bounded == in_process
        assert {c.kind for c in bounded.changes} == {UnitKind.TERRAGRUNT, UnitKind.TERRAFORM}
        assert len(bounded.changes) == 5 and bounded.errors == []
    with pytest.raises(GitError, match="unknown ref 'no-such-ref'"):
        detect_changes_bounded(repo.path / ".git", "no-such-ref", "HEAD", Event.PUSH)


def _children_with(marker: str) -> list[int]:
    """Processes still running with `marker` in their environment."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_detection_that_takes_too_long_is_stopped_at_the_limit(tmp_path, monkeypatch):
    """Ten files of 1 MiB of garbage take tree-sitter about 25 s to parse: the child is killed after 2 s."""
    random.seed(3)
    garbage = {f"u{i}/main.tf": "".join(random.choices('{}[]()"$%~ab=,.\n:?', k=parse.MAX_FILE_BYTES - 10))
               for i in range(10)}
    repo = repo_with(tmp_path, {"u0/main.tf": BACKEND}, garbage)
    marker = f"PIPELINES_TEST_MARKER={tmp_path}"
    monkeypatch.setenv("PIPELINES_TEST_MARKER", str(tmp_path))
    started = time.monotonic()
    result = detect_changes_bounded(git.Repo(repo.path), "HEAD~1", "HEAD", Event.PUSH, timeout_s=2,
                                    cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < HOSTILE_S
    assert strings(result.errors) == ["<repository>: change detection did not finish within 2 s "
                                      "(PIPELINES_DETECT_TIMEOUT_S): nothing is planned or applied"]
    assert result.head == repo.git("rev-parse", "HEAD") and result.changes == []
    assert _children_with(marker) == []  # the child and its git processes are gone


def test_detection_that_needs_too_much_memory_is_stopped(tmp_path):
    """A 1 MiB file of file() calls is 80,000 parsed call sites: far more than 100 MiB of address space."""
    calls = "locals {\n" + 'a = file("x")\n' * ((parse.MAX_FILE_BYTES - 20) // 15) + "}\n"
    repo = repo_with(tmp_path, {"u/main.tf": BACKEND}, {"u/calls.tf": calls})
    result = detect_changes_bounded(git.Repo(repo.path), "HEAD~1", "HEAD", Event.PULL_REQUEST, memory_mb=100,
                                    cache_dir=tmp_path / "cache")
    [error] = strings(result.errors)
    # MemoryError in Python, or a crash in native code (tree-sitter) that cannot allocate
    assert error.startswith("<repository>: change detection ")
    assert "out of memory (limit 100 MiB, PIPELINES_DETECT_MEMORY_MB)" in error
    assert error.endswith(": nothing is planned or applied")


# ---- 6. symlinks ---------------------------------------------------------------------------------------------------

def test_a_unit_whose_backend_is_a_symlink_is_planned_when_the_target_changes(tmp_path):
    repo = make_live_repo(tmp_path / "live", {"accounts.yml": ACCOUNTS, "shared/backend.tf.tpl": BACKEND,
                                              "shared/common/vars.hcl": "locals {\n  a = 1\n}\n",
                                              "prod/app/main.tf": 'resource "null_resource" "x" {}\n',
                                              "prod/web/terragrunt.hcl": 'include {\n  path = "common/vars.hcl"\n}\n'})
    link(repo, "prod/app/backend.tf", "../../shared/backend.tf.tpl")
    link(repo, "prod/web/common", "../../shared/common")
    repo.commit(message="links")
    tree = read_tree(repo.path / ".git", "HEAD")
    assert tree.files["prod/app/backend.tf"] == tree.files["shared/backend.tf.tpl"]
    assert tree.files["prod/web/common/vars.hcl"] == tree.files["shared/common/vars.hcl"]
    assert {(c.type.value, c.unit, c.kind) for c in detect(repo, tmp_path).changes} == {
        ("ModuleAdded", "prod/app", UnitKind.TERRAFORM), ("ModuleChanged", "prod/web", UnitKind.TERRAGRUNT)}
    repo.commit({"shared/backend.tf.tpl": BACKEND + "# tuned\n", "shared/common/vars.hcl": "locals {\n  a = 2\n}\n"})
    for _ in range(2):  # the second time from the stored evaluations
        result = detect(repo, tmp_path, event="push")
        assert [(c.type.value, c.unit, c.triggers) for c in result.changes] == [
            ("ModuleChanged", "prod/app", ["shared/backend.tf.tpl"]),
            ("ModuleChanged", "prod/web", ["shared/common/vars.hcl"])]
        assert result.errors == []


def test_a_new_link_to_a_folder_that_holds_a_unit_adds_that_unit(tmp_path):
    repo = make_live_repo(tmp_path / "live", {"accounts.yml": ACCOUNTS, "root.hcl": "",
                                              "prod/app/terragrunt.hcl": 'include {\n  path = "../../root.hcl"\n}\n'})
    link(repo, "prod/app2", "app")
    repo.commit(message="a second copy of the app")
    assert [(c.type.value, c.unit) for c in detect(repo, tmp_path).changes] == [("ModuleAdded", "prod/app2")]
    repo.commit({"root.hcl": "# edited\n"})
    assert {(c.type.value, c.unit) for c in detect(repo, tmp_path).changes} == {
        ("HCLChanged", "prod/app"), ("HCLChanged", "prod/app2")}
    (repo.path / "prod/app2").unlink()
    repo.commit(message="one app again")
    assert [(c.type.value, c.unit, c.action.value) for c in detect(repo, tmp_path, event="push").changes] == [
        ("ModuleDeleted", "prod/app2", "destroy")]


def test_links_that_leave_the_repository_dangle_or_loop_are_errors_naming_link_and_target(tmp_path):
    repo = make_live_repo(tmp_path / "live", {"accounts.yml": ACCOUNTS, "prod/app/main.tf": BACKEND})
    link(repo, "prod/app/secret.tf", "/etc/passwd")
    link(repo, "prod/app/up.tf", "../../../outside.tf")
    link(repo, "prod/app/gone.tf", "../missing.tf")
    link(repo, "prod/app/all", "../..")
    link(repo, "prod/x", "y")
    link(repo, "prod/y", "x")
    repo.commit(message="hostile links")
    started = time.monotonic()
    result = detect(repo, tmp_path)
    assert time.monotonic() - started < HOSTILE_S
    assert strings(result.errors) == [
        "prod/app/all: symlink prod/app/all points to ../.., a folder that leads back to it (a loop)",
        "prod/app/gone.tf: symlink prod/app/gone.tf points to ../missing.tf, which does not exist",
        "prod/app/secret.tf: symlink prod/app/secret.tf points outside the repository (/etc/passwd)",
        "prod/app/up.tf: symlink prod/app/up.tf points outside the repository (../../../outside.tf)",
        "prod/x: symlink prod/x: more than 40 symlinks to follow (y; a loop?)",
        "prod/y: symlink prod/y: more than 40 symlinks to follow (x; a loop?)"]
    assert [(c.type.value, c.unit) for c in result.changes] == [("ModuleChanged", "prod/app")]
    proc = run_cli(repo, tmp_path)
    assert proc.returncode == 1 and len(json.loads(proc.stdout)["errors"]) == 6


def test_links_to_folders_that_multiply_are_bounded(tmp_path):
    """Each level links twice to the next: 2^30 paths if followed naively."""
    files = {"accounts.yml": ACCOUNTS, "prod/app/main.tf": BACKEND, "l30/leaf.hcl": ""}
    repo = make_live_repo(tmp_path / "live", files)
    for i in range(30):
        link(repo, f"l{i}/a", f"../l{i + 1}")
        link(repo, f"l{i}/b", f"../l{i + 1}")
    repo.commit(message="fan-out")
    started = time.monotonic()
    tree = read_tree(repo.path / ".git", "HEAD")
    assert time.monotonic() - started < HOSTILE_S
    assert len(tree.files) < 200_000
    assert ("l0/a", "symlinks to folders show more than 100,000 paths; the rest are not read") in tree.problems


def test_code_read_through_a_link_is_evaluated_where_the_link_is_and_reevaluated_when_its_target_changes(tmp_path):
    """Terraform runs prod/app/main.tf from prod/app: its module source is relative to the link, not the target."""
    module = 'module "m" {\n  source = "../../modules/%s"\n}\n'
    repo = make_live_repo(tmp_path / "live", {"prod/app/backend.tf": BACKEND, "shared/app.tf": module % "a",
                                              "modules/a/main.tf": "", "modules/b/main.tf": ""})
    link(repo, "prod/app/main.tf", "../../shared/app.tf")
    repo.commit(message="link")
    repo.commit({"modules/a/main.tf": "# a\n"})
    assert [(c.type.value, c.unit) for c in detect(repo, tmp_path).changes] == [
        ("ModuleSourceChanged", "prod/app")]
    repo.commit({"shared/app.tf": module % "b"})
    assert [(c.type.value, c.unit, c.triggers) for c in detect(repo, tmp_path).changes] == [
        ("ModuleChanged", "prod/app", ["shared/app.tf"])]
    repo.commit({"modules/b/main.tf": "# b\n", "modules/a/main.tf": "# a again\n"})
    assert [(c.type.value, c.unit, c.triggers) for c in detect(repo, tmp_path).changes] == [
        ("ModuleSourceChanged", "prod/app", ["modules/b/main.tf"])]


def test_random_expressions_never_crash_evaluation():
    """Every function, operator and collection, combined at random (2,000 units, fixed seed): evaluation always
    ends in values, Unknowns, warnings or errors, never an exception."""
    from pipelines_dagster.core.terragrunt.functions import FUNCTIONS, TREE_FUNCTIONS

    functions = sorted({*FUNCTIONS, *TREE_FUNCTIONS, "try"})
    atoms = ['"a"', '""', '"../b.hcl"', "1", "0", "-1", "1.5", "true", "null", "local.x", "[]", "{}", '["a", 1]',
             '{a = "b"}', "include.root", "local", '"${local.y}"', '"%s"', '"/(a)/"', '"$1"', "path.module"]
    rng = random.Random(11)

    def expr(depth: int) -> str:
        pick = rng.random()
        if depth == 0 or pick < 0.25:
            return rng.choice(atoms)
        if pick < 0.6:
            return f"{rng.choice(functions)}({', '.join(expr(depth - 1) for _ in range(rng.randint(0, 3)))})"
        if pick < 0.75:
            return f"{expr(depth - 1)} {rng.choice('+-*/%<>')} {expr(depth - 1)}"
        if pick < 0.8:
            return f"[{expr(depth - 1)}, {{k = {expr(depth - 1)}}}][{expr(depth - 1)}]"
        if pick < 0.85:
            return f"{{k = {expr(depth - 1)}}}[{expr(depth - 1)}]"
        return f'"${{{expr(depth - 1)}}}/z" == "" ? {expr(depth - 1)} : {expr(depth - 1)}'
    for _ in range(2000):
        source = (f"locals {{\n  x = {expr(3)}\n  y = {expr(3)}\n  r = read_terragrunt_config({expr(3)})\n}}\n"
                  f'include "root" {{\n  path = {expr(4)}\n}}\ndependencies {{\n  paths = {expr(3)}\n}}\n'
                  f"terraform {{\n  source = {expr(3)}\n}}\n")
        result = evaluate({"u/terragrunt.hcl": source, "b.hcl": "", "x/terragrunt.hcl": ""}, "u")
        assert all(p.file and p.severity in ("error", "warning") for p in result.problems)
