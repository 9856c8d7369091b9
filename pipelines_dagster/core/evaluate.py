"""Static evaluation of Terragrunt and Terraform configuration, as Terragrunt does it, over a git tree.

Only what decides which files a unit depends on is evaluated: include paths, read_terragrunt_config / file()
arguments, dependency paths, terraform sources and module sources, and the locals they use. Everything else stays
unevaluated. A value that cannot be known statically is `Unknown`; where one reaches a path the unit is flagged
conservative and a warning names the file, line and expression.

The configuration comes from whoever can push a branch, so evaluation is bounded: values larger than
MAX_VALUE_SIZE (or nested deeper than MAX_VALUE_DEPTH, or numbers beyond MAX_NUMBER_BITS), expressions nested
deeper than MAX_EVAL_DEPTH and evaluations longer than MAX_EVAL_STEPS become `Limit` (an Unknown saying which limit
and where), and regular expressions run on RE2, in linear time.
"""

import posixpath
import re
from dataclasses import dataclass, field

ROOT = "/.pipelines-repo"  # where the repository root appears to evaluated expressions (get_repo_root())
TERRAGRUNT_FILE = "terragrunt.hcl"

MAX_VALUE_SIZE = 1_000_000  # characters of a string; elements plus characters of a collection
MAX_VALUE_DEPTH = 32  # lists and maps inside lists and maps
MAX_NUMBER_BITS = 512  # Terraform's numbers have 512 bits of precision
MAX_EVAL_DEPTH = 150  # expressions being evaluated inside each other (through locals and configs read)
MAX_EVAL_STEPS = 2_000_000  # expressions evaluated plus elements measured, per unit
MAX_READ_DEPTH = 32  # configuration files read by configuration files read by the unit
MAX_PATH_CHARS = 4096  # PATH_MAX
MAX_REGEX_WORK = 20_000_000  # RE2 program size x text length (RE2 is linear in both)
MAX_PROBLEMS = 50  # problems listed per unit
MAX_MESSAGE_CHARS = 600


class Unknown:
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unknown({self.reason})"


class Limit(Unknown):
    """Unknown because evaluating it would exceed a bound; `located` once the reason names where."""

    __slots__ = ("located",)

    def __init__(self, reason: str, located: bool = False):
        super().__init__(reason)
        self.located = located


def _short(value, limit: int = 80) -> str:
    """repr of a value from the repository, shortened for messages."""
    text = repr(value) if not isinstance(value, (_List, _Map)) or len(value) < 20 else f"<{len(value)} elements>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


class EvalError(Exception):
    """The configuration is wrong (not merely unknowable): a missing included file, a path escaping the repo."""


def to_abs(rel: str) -> str:
    return ROOT if rel == "" else f"{ROOT}/{rel}"


def to_rel(abs_path: str) -> str:
    """Repo-relative path of an absolute one; EvalError when it lies outside the repository."""
    norm = posixpath.normpath(abs_path)
    if norm == ROOT:
        return ""
    if not norm.startswith(ROOT + "/"):
        raise EvalError(f"path {_short(abs_path)} escapes the repository")
    return norm[len(ROOT) + 1:]


def rel_dir(path: str) -> str:
    return posixpath.dirname(path)


def resolve_path(base_dir_rel: str, value: str) -> str:
    """A path as written in configuration, relative to base_dir, as a repo-relative path."""
    if len(value) > MAX_PATH_CHARS:
        raise EvalError(f"path {_short(value)} is {len(value):,} characters long (the limit is {MAX_PATH_CHARS})")
    embedded = value.rfind(ROOT + "/")
    if embedded > 0 or (embedded < 0 and value.endswith(ROOT) and len(value) > len(ROOT)):
        # "${get_terragrunt_dir()}/${find_in_parent_folders("x")}": written for Terragrunt versions whose
        # find_in_parent_folders returned a relative path; the absolute part is the file meant
        value = value[embedded:] if embedded > 0 else ROOT
    try:
        return to_rel(value if value.startswith("/") else posixpath.join(to_abs(base_dir_rel), value))
    except EvalError:
        raise EvalError(f"path {_short(value)} escapes the repository") from None


def split_source(value: str) -> str | None:
    """Local directory (absolute, in evaluator space) of a terraform/module source, or None when remote."""
    value = value.split("?", 1)[0]
    if "::" in value or value.startswith(("git@", "github.com/", "bitbucket.org/", "http://", "https://",
                                         "s3", "gcs", "tfr:")):
        return None
    if not (value.startswith(("/", "./", "../")) or value in (".", "..")):
        return None
    # "dir//subdir": the folder before // is copied, the module is the subdir
    if "//" in value.lstrip("/"):
        lead = "/" if value.startswith("/") else ""
        root, sub = value.lstrip("/").split("//", 1)
        value = lead + root + "/" + sub
    return value


class Inputs:
    """Everything an evaluation looked at, as key -> fingerprint, so a cached result can be checked for reuse."""

    def __init__(self, view: "TreeView"):
        self.view = view
        self.keys: dict[str, str] = {}

    def file(self, rel: str) -> str | None:
        blob = self.view.files.get(rel)
        self.keys["f:" + rel] = blob or ""
        return blob

    def isdir(self, rel: str) -> bool:
        exists = rel in self.view.dirs
        self.keys["d:" + rel] = "1" if exists else ""
        return exists

    def tf_files(self, rel_dir_: str) -> list[str]:
        names = self.view.tf_files(rel_dir_)
        self.keys["t:" + rel_dir_] = self.view.tf_fingerprint(rel_dir_)
        return names


class TreeView:
    """A tree's files and folders, and the facts of its HCL files (through a facts provider)."""

    def __init__(self, files: dict[str, str], dirs, facts_for_blob):
        self.files = files
        self.dirs = dirs
        self._facts_for_blob = facts_for_blob
        self._tf_by_dir: dict[str, list[str]] | None = None

    def facts(self, rel: str) -> dict:
        return self._facts_for_blob(self.files[rel], rel)

    def _index_tf(self) -> dict[str, list[str]]:
        if self._tf_by_dir is None:
            by_dir: dict[str, list[str]] = {}
            for path in self.files:
                if path.endswith(".tf"):
                    by_dir.setdefault(rel_dir(path), []).append(path)
            self._tf_by_dir = by_dir
        return self._tf_by_dir

    def tf_files(self, rel_dir_: str) -> list[str]:
        return self._index_tf().get(rel_dir_, [])

    def tf_fingerprint(self, rel_dir_: str) -> str:
        return ",".join(f"{p}={self.files[p]}" for p in sorted(self.tf_files(rel_dir_)))

    def fingerprint(self, key: str) -> str:
        kind, rel = key[0], key[2:]
        if kind == "f":
            return self.files.get(rel) or ""
        if kind == "d":
            return "1" if rel in self.dirs else ""
        return self.tf_fingerprint(rel)


@dataclass
class Problem:
    severity: str  # "error" | "warning"
    file: str
    line: int | None
    message: str


@dataclass
class UnitEval:
    """What one unit depends on, evaluated at one tree."""

    reads: set[str] = field(default_factory=set)  # files whose content configures the unit
    included: set[str] = field(default_factory=set)  # files pulled in by include blocks
    module_dirs: set[str] = field(default_factory=set)  # local Terraform module folders it runs
    dependencies: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # unit dir -> (file, line)
    conservative: bool = False
    problems: list[Problem] = field(default_factory=list)


class _Config:
    """A terragrunt configuration read with read_terragrunt_config(): attributes evaluated on demand."""

    def __init__(self, scope: "Scope"):
        self.scope = scope

    def get(self, name: str):
        if name == "locals":
            return _Locals(self.scope)
        return Unknown(f"{name} of {self.scope.file} is not evaluated statically")


class _Locals:
    def __init__(self, scope: "Scope"):
        self.scope = scope

    def get(self, name: str):
        return self.scope.local(name)


class _Includes:
    def __init__(self, exposed: dict[str, "Scope"]):
        self.exposed = exposed

    def get(self, name: str):
        scope = self.exposed.get(name)
        if scope is None:
            return Unknown(f"include.{name} is not an exposed include")
        return _Config(scope)


@dataclass
class Scope:
    """Where expressions of one file are evaluated: the file, and the Terragrunt config path they run as."""

    ev: "UnitEvaluator"
    file: str
    facts: dict
    config_path: str  # the terragrunt config whose folder functions refer to
    include: tuple[str, str] | None = None  # (name, file) when this file is evaluated as an include
    child_includes: list[tuple[str, str]] = field(default_factory=list)
    exposed: dict[str, "Scope"] = field(default_factory=dict)
    terraform: bool = False  # plain Terraform: path.module etc.
    _locals: dict = field(default_factory=dict)
    _evaluating: set = field(default_factory=set)

    @property
    def config_dir(self) -> str:
        return rel_dir(self.config_path)

    def local(self, name: str):
        if name in self._locals:
            return self._locals[name]
        expr = self.facts["locals"].get(name)
        if expr is None:
            return Unknown(f"local.{name} is not defined in {self.file}")
        if name in self._evaluating:
            return Unknown(f"local.{name} refers to itself")
        self._evaluating.add(name)
        try:
            value = self.ev.eval(expr, self)
        finally:
            self._evaluating.discard(name)
        if isinstance(value, Limit) and not value.located:
            line = self.facts.get("local_lines", {}).get(name)
            value = Limit(f"local.{name} at {self.file}{f':{line}' if line else ''}: {value.reason}", located=True)
        self._locals[name] = value
        return value

    def selected_include(self, args: list) -> str | None:
        """The included file that include-relative functions refer to."""
        if self.include is not None:
            return self.include[1]
        if not self.child_includes:
            return None
        if args and isinstance(args[0], str):
            for name, path in self.child_includes:
                if name == args[0]:
                    return path
        return self.child_includes[0][1]


def _relpath(target_rel: str, start_rel: str) -> str:
    return posixpath.relpath(to_abs(target_rel), to_abs(start_rel))


def _str(value) -> str | Unknown:
    if isinstance(value, Unknown):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return Unknown("a collection is not a string")


_TOO_LARGE = f"a value larger than {MAX_VALUE_SIZE:,} elements and characters"
_TOO_DEEP = f"a value nested more than {MAX_VALUE_DEPTH} levels deep"


class _List(list):
    """A list whose size (elements and characters, nested ones included) and depth (levels of collections) are
    known."""

    __slots__ = ("size", "depth")


class _Map(dict):
    """A map whose size (entries, characters of keys and values, nested ones included) and depth are known."""

    __slots__ = ("size", "depth")


def _measure(value) -> tuple[int, int]:
    """(size, depth) of a value: a collection counts its elements, a string its characters."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, (_List, _Map)):
        return value.size, value.depth
    return 1, 0


def _sized(value, over: int = 0) -> "_List | _Map | Limit":
    """A list or map (new from evaluation or a function) with its size known, or the Limit it exceeds. Elements
    that are collections are already sized, except a function's own results one level down (regex groups, ...)."""
    is_map = isinstance(value, dict)
    size, depth = len(value), 1
    for key, item in (value.items() if is_map else enumerate(value)):
        if is_map:
            size += len(key) if isinstance(key, str) else 1
        if isinstance(item, (list, dict)) and not isinstance(item, (_List, _Map)):
            if over >= MAX_VALUE_DEPTH:
                return Limit(_TOO_DEEP)
            item = _sized(item, over + 1)
            if isinstance(item, Limit):
                return item
            value[key] = item
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, (_List, _Map)):
            size += item.size
            depth = max(depth, item.depth + 1)
        if size > MAX_VALUE_SIZE:
            return Limit(_TOO_LARGE)
    if depth > MAX_VALUE_DEPTH:
        return Limit(_TOO_DEEP)
    sized = _Map(value) if is_map else _List(value)
    sized.size, sized.depth = size, depth
    return sized


def _bounded(value):
    """The value, sized, or the Limit it exceeds."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE_SIZE:
            return Limit(f"a string of {len(value):,} characters, more than the {MAX_VALUE_SIZE:,} evaluated")
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_NUMBER_BITS:
            return Limit(f"a number of more than {MAX_NUMBER_BITS} bits")
        return value
    if isinstance(value, (list, dict)) and not isinstance(value, (_List, _Map)):
        return _sized(value)
    return value


class UnitEvaluator:
    """Evaluates one unit (and everything it includes, reads and runs) at one tree."""

    def __init__(self, view: TreeView):
        self.view = view
        self.inputs = Inputs(view)
        self.result = UnitEval()
        self._processed: set[tuple[str, str]] = set()
        self._configs: dict[str, _Config] = {}  # read_terragrunt_config() values, by file
        self._reading = 0  # configuration files being processed inside each other
        self._depth = 0  # expressions being evaluated inside each other
        self._steps = MAX_EVAL_STEPS
        self._unlisted: dict[str, int] = {}  # severity -> problems beyond MAX_PROBLEMS

    # ---- entry points -------------------------------------------------------------------------------------

    def terragrunt_unit(self, unit_dir: str) -> UnitEval:
        config = posixpath.join(unit_dir, TERRAGRUNT_FILE) if unit_dir else TERRAGRUNT_FILE
        source = self._process_config(config, config, own_unit=True)
        module_dir = unit_dir
        if source is not None:
            module_dir = self._terragrunt_source(source)
        if module_dir is not None:
            self._module_closure(module_dir, own_dir=unit_dir)
        return self._finish(config)

    def terraform_unit(self, unit_dir: str) -> UnitEval:
        self._module_closure(unit_dir, own_dir=unit_dir)
        return self._finish(unit_dir)

    def _finish(self, unit_file: str) -> UnitEval:
        if self._unlisted:
            severity = "error" if "error" in self._unlisted else "warning"
            self.result.problems.append(Problem(severity, unit_file, None, (
                f"{sum(self._unlisted.values())} more problems of this unit are not listed")))
        return self.result

    # ---- problems ------------------------------------------------------------------------------------------

    def _problem(self, severity: str, file: str, line: int | None, message: str) -> None:
        if len(self.result.problems) >= MAX_PROBLEMS:
            self._unlisted[severity] = self._unlisted.get(severity, 0) + 1
            return
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS - 3] + "..."
        self.result.problems.append(Problem(severity, file, line, message))

    def error(self, file: str, line: int | None, message: str) -> None:
        self._problem("error", file, line, message)

    def unresolved(self, file: str, line: int | None, text: str, reason: str) -> None:
        self.result.conservative = True
        self._problem("warning", file, line, f"cannot evaluate {text} statically ({reason}); the unit is planned "
                                             "for any .hcl change in its parent folders or in _envcommon")

    # ---- configuration files -------------------------------------------------------------------------------

    def _facts(self, rel: str) -> dict | None:
        if self.inputs.file(rel) is None:
            return None
        facts = self.view.facts(rel)
        err = facts.get("syntax_error")
        if err:
            self.result.conservative = True
            self.error(rel, err["line"], err["message"] + (f" (column {err['col']})" if err.get("col") else ""))
        return facts

    def _process_config(self, file: str, config_path: str, own_unit: bool = False,
                        include: tuple[str, str] | None = None, read: bool = False):
        """Follow includes, reads and dependencies of one config file; return its terraform.source site."""
        key = (file, config_path)
        if key in self._processed:
            return None
        self._processed.add(key)
        facts = self._facts(file)
        if facts is None:
            return None
        scope = Scope(self, file, facts, config_path, include=include)
        if not own_unit:
            self.result.reads.add(file)
        source = None
        if not include:
            for site in facts["includes"]:
                target = self._site_path(scope, site, "include")
                if target is None:
                    continue
                if self.inputs.file(target) is None:
                    self.error(file, site["line"], f"included file {target} does not exist")
                    continue
                self.result.included.add(target)
                scope.child_includes.append((site["name"], target))
            for name, target in scope.child_includes:
                inc_source = self._process_config(target, config_path, include=(name, target))
                if inc_source is not None and source is None:
                    source = inc_source
                site = next(s for s in facts["includes"] if s["name"] == name)
                if site.get("expose"):
                    inc_facts = self.view.facts(target)
                    scope.exposed[name] = Scope(self, target, inc_facts, config_path, include=(name, target))
        for site in facts["reads"]:
            self._read_site(scope, site)
        if not read:
            for site in facts["dependencies"]:
                target = self._site_path(scope, site, f"dependency {site['name']!r} config_path")
                if target is not None:
                    self._dependency(file, site["line"], target)
            for site in facts["dependencies_paths"]:
                try:
                    value = self.eval(site["expr"], scope)
                except EvalError as exc:
                    self.error(file, site["line"], f"dependencies paths: {exc}")
                    continue
                if isinstance(value, Unknown) or not isinstance(value, list):
                    self.unresolved(file, site["line"], site["text"],
                                    value.reason if isinstance(value, Unknown) else "not a list")
                    continue
                for item in value:
                    item = _str(item)
                    if isinstance(item, Unknown):
                        self.unresolved(file, site["line"], site["text"], item.reason)
                        continue
                    try:
                        self._dependency(file, site["line"], resolve_path(scope.config_dir, item))
                    except EvalError as exc:
                        self.error(file, site["line"], str(exc))
        if facts["source"] is not None and not read:
            source = (scope, facts["source"])  # the unit's own source overrides included ones
        return source

    def _dependency(self, file: str, line: int | None, target: str) -> None:
        if target.endswith(".hcl"):
            target = rel_dir(target)
        self.inputs.isdir(target)
        self.result.dependencies.setdefault(target, (file, line))

    def _eval_site(self, scope: Scope, site: dict, expr: list, what: str):
        """Evaluate a site's expression; configuration errors become problems naming file and line."""
        try:
            return _str(self.eval(expr, scope)), True
        except EvalError as exc:
            self.error(scope.file, site["line"], f"{what}: {exc}")
            return None, False

    def _site_path(self, scope: Scope, site: dict, what: str) -> str | None:
        value, ok = self._eval_site(scope, site, site["expr"], what)
        if not ok:
            return None
        if isinstance(value, Unknown):
            self.unresolved(scope.file, site["line"], site["text"], value.reason)
            return None
        try:
            return resolve_path(scope.config_dir, value)
        except EvalError as exc:
            self.error(scope.file, site["line"], f"{what}: {exc}")
            return None

    def _read_site(self, scope: Scope, site: dict) -> None:
        _, fname, args = site["expr"]
        if not args:
            return
        value, ok = self._eval_site(scope, site, args[0], f"{fname}()")
        if not ok:
            return
        if isinstance(value, Unknown):
            self.unresolved(scope.file, site["line"], site["text"], value.reason)
            return
        try:
            target = resolve_path(scope.config_dir, value)
        except EvalError as exc:
            self.error(scope.file, site["line"], f"{fname}(): {exc}")
            return
        if fname == "read_terragrunt_config":
            target = self._config_target(target)
            if self.inputs.file(target) is None:
                if len(args) < 2:
                    self.error(scope.file, site["line"], f"read_terragrunt_config(): {target} does not exist")
                return
            if self._reading >= MAX_READ_DEPTH:
                self.unresolved(scope.file, site["line"], site["text"],
                                f"more than {MAX_READ_DEPTH} configuration files read inside each other")
                return
            self._reading += 1
            try:
                self._process_config(target, target, read=True)
            finally:
                self._reading -= 1
        else:
            self.result.reads.add(target)
            if self.inputs.file(target) is None and not self.inputs.isdir(target):
                self.result.conservative = True
                self._problem("warning", scope.file, site["line"],
                              f"{fname}() reads {target}, which does not exist at this commit (generated or ignored "
                              "file?); the unit is planned for any .hcl change in its parent folders or in _envcommon")

    def _config_target(self, target: str) -> str:
        if self.inputs.isdir(target):
            return posixpath.join(target, TERRAGRUNT_FILE) if target else TERRAGRUNT_FILE
        return target

    # ---- Terraform code ------------------------------------------------------------------------------------

    def _terragrunt_source(self, source) -> str | None:
        scope, site = source
        value, ok = self._eval_site(scope, site, site["expr"], "terraform source")
        if not ok:
            return None
        if isinstance(value, Unknown):
            self.unresolved(scope.file, site["line"], site["text"], value.reason)
            return None
        local = split_source(value)
        if local is None:
            return None
        try:
            target = resolve_path(scope.config_dir, local)
        except EvalError as exc:
            self.error(scope.file, site["line"], f"terraform source: {exc}")
            return None
        if not self.inputs.isdir(target):
            self.error(scope.file, site["line"], f"terraform source {value!r}: folder {target} does not exist")
            return None
        return target

    def _module_closure(self, start: str, own_dir: str) -> None:
        pending = [start]
        seen: set[str] = set()
        while pending:
            module_dir = pending.pop()
            if module_dir in seen:
                continue
            seen.add(module_dir)
            if module_dir != own_dir:
                self.result.module_dirs.add(module_dir)
            for tf in self.inputs.tf_files(module_dir):
                facts = self._facts(tf)
                if facts is None:
                    continue
                scope = Scope(self, tf, facts, tf, terraform=True)
                for site in facts["modules"]:
                    value = site["expr"][1] if site["expr"][0] == "lit" else None
                    if not isinstance(value, str):
                        continue  # Terraform requires literal sources; registry/remote ones are not ours
                    local = split_source(value)
                    if local is None:
                        continue
                    try:
                        target = resolve_path(module_dir, local)
                    except EvalError as exc:
                        self.error(tf, site["line"], f"module {site['name']!r} source: {exc}")
                        continue
                    if not self.inputs.isdir(target):
                        self.error(tf, site["line"], f"module {site['name']!r} source folder {target} does not exist")
                        continue
                    pending.append(target)
                for site in facts["reads"]:
                    self._read_site(scope, site)

    # ---- expressions ---------------------------------------------------------------------------------------

    def eval(self, expr: list, scope: Scope):
        kind = expr[0]
        if kind == "lit":
            return expr[1]
        self._steps -= 1
        if self._steps < 0 or self._depth >= MAX_EVAL_DEPTH:
            if self._steps < 0:
                return Limit(f"evaluation of this unit stopped after {MAX_EVAL_STEPS:,} steps")
            return Limit(f"expressions nested more than {MAX_EVAL_DEPTH} levels deep (through locals and "
                         "configurations read)")
        self._depth += 1
        try:
            if kind == "tpl":
                out = []
                size = 0
                for part in expr[1]:
                    value = _str(self.eval(part, scope))
                    if isinstance(value, Unknown):
                        return value
                    size += len(value)
                    if size > MAX_VALUE_SIZE:
                        return Limit(f"a string of more than {MAX_VALUE_SIZE:,} characters")
                    out.append(value)
                return "".join(out)
            if kind == "var":
                return self._variable(expr[1], scope)
            if kind == "attr":
                return _get(self.eval(expr[1], scope), expr[2])
            if kind == "idx":
                return _get(self.eval(expr[1], scope), self.eval(expr[2], scope))
            if kind == "call":
                return self._call(expr[1], expr[2], scope)
            if kind == "tuple":
                return self._collection(_List(self.eval(e, scope) for e in expr[1]))
            if kind == "obj":
                out = _Map()
                for key_expr, value_expr in expr[1]:
                    key = _str(self.eval(key_expr, scope))
                    if isinstance(key, Unknown):
                        return key
                    out[key] = self.eval(value_expr, scope)
                return self._collection(out)
            if kind == "cond":
                cond = self.eval(expr[1], scope)
                if isinstance(cond, bool):
                    return self.eval(expr[2] if cond else expr[3], scope)
                return cond if isinstance(cond, Unknown) else Unknown("condition is not a boolean")
            if kind == "bin":
                return _bounded(_binary(expr[1], self.eval(expr[2], scope), self.eval(expr[3], scope)))
            if kind == "un":
                value = self.eval(expr[2], scope)
                if isinstance(value, Unknown):
                    return value
                if expr[1] == "!" and isinstance(value, bool):
                    return not value
                if expr[1] == "-" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    return -value
                return Unknown(f"operator {expr[1]}")
            if len(expr) > 2:  # the parser's own reason (an expression nested too deep)
                return Limit(f"{expr[2]} of {scope.file}", located=True)
            return Unknown(f"{expr[1]} is not evaluated statically")
        finally:
            self._depth -= 1

    def _collection(self, value: "_List | _Map") -> "_List | _Map | Limit":
        """A new list or map: its size from its elements' sizes (each element is measured once)."""
        self._steps -= len(value)
        size, depth = len(value), 0
        if isinstance(value, _Map):
            size += sum(map(len, value))
        for item in (value.values() if isinstance(value, _Map) else value):
            if isinstance(item, Limit):  # a collection holding a value too large is too large
                return item
            item_size, item_depth = _measure(item)
            size += item_size
            if item_depth >= depth:
                depth = item_depth + 1
        if size > MAX_VALUE_SIZE:
            return Limit(_TOO_LARGE)
        if depth > MAX_VALUE_DEPTH:
            return Limit(_TOO_DEEP)
        value.size, value.depth = size, depth
        return value

    def _variable(self, name: str, scope: Scope):
        if name == "local":
            return _Locals(scope)
        if name == "include":
            return _Includes(scope.exposed)
        if name == "path" and scope.terraform:
            here = to_abs(rel_dir(scope.file))
            return _sized({"module": here, "root": here, "cwd": here})
        if name in ("dependency", "var", "feature", "values"):
            return Unknown(f"{name}.* is only known at run time")
        return Unknown(f"unknown variable {_short(name)}")

    def _call(self, name: str, arg_exprs: list, scope: Scope):
        if name == "try":
            for arg in arg_exprs:
                value = self.eval(arg, scope)
                if not isinstance(value, Unknown):
                    return value
            return Unknown("no argument of try() could be evaluated")
        args = [self.eval(a, scope) for a in arg_exprs]
        if name in _COMBINING and sum(_measure(a)[0] for a in args) > MAX_VALUE_SIZE:
            return Limit(f"arguments of {name}() larger than {MAX_VALUE_SIZE:,} elements and characters")
        fn = _FUNCTIONS.get(name)
        if fn is None:
            if name in _IO_FUNCTIONS:
                try:
                    result = _IO_FUNCTIONS[name](self, scope, args)
                except _FUNCTION_ERRORS as exc:
                    return Unknown(f"{name}() failed: {_failure(exc)}")
                return result if result.__class__ is str and len(result) <= MAX_VALUE_SIZE else _bounded(result)
            return Unknown(f"function {_short(name)}() is not evaluated statically")
        for arg in args:
            if isinstance(arg, Unknown) and (name not in _LENIENT or isinstance(arg, Limit)):
                return arg
        try:
            result = fn(*args)
        except _FUNCTION_ERRORS as exc:
            return Unknown(f"{name}() failed: {_failure(exc)}")
        return result if result.__class__ is str and len(result) <= MAX_VALUE_SIZE else _bounded(result)

    # ---- Terragrunt functions that look at the tree -----------------------------------------------------

    def find_in_parent_folders(self, scope: Scope, args: list):
        if any(isinstance(a, Unknown) for a in args):
            return next(a for a in args if isinstance(a, Unknown))
        wanted = args[0] if args and args[0] else TERRAGRUNT_FILE
        current = rel_dir(scope.config_path)
        while current:
            current = rel_dir(current)
            try:
                candidate = resolve_path(current, wanted)
            except EvalError:
                break
            if self.inputs.file(candidate) is not None:
                return to_abs(candidate)
            if not current:
                break
        if len(args) > 1:
            return args[1]
        raise EvalError(f"find_in_parent_folders({wanted!r}): no {wanted} in the parent folders of "
                        f"{scope.config_path}")


def _get(base, key):
    if isinstance(base, Unknown):
        return base
    if isinstance(key, Unknown):
        return key
    if isinstance(base, (_Locals, _Config, _Includes)):
        return base.get(key) if isinstance(key, str) else Unknown(f"cannot index {_kind(base)} with {_short(key)}")
    if isinstance(base, dict) and isinstance(key, (str, int, float)):
        key = _str(key)
        return base[key] if key in base else Unknown(f"key {_short(key)} not found")
    if isinstance(base, list) and isinstance(key, int) and not isinstance(key, bool):
        return base[key] if -len(base) <= key < len(base) else Unknown(f"index {key} out of range")
    return Unknown(f"cannot index {_kind(base)} with {_short(key)}")


def _kind(value) -> str:
    """What a value is, in HCL's words."""
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, _Locals):
        return "local"
    if isinstance(value, _Includes):
        return "include"
    return "a configuration" if isinstance(value, _Config) else "null"


def _number(value):
    """HCL converts strings to numbers for arithmetic; anything else that is not a number is an error."""
    if isinstance(value, str):
        return float(value) if "." in value or "e" in value.lower() else int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{type(value).__name__} is not a number")
    return value


def _binary(op: str, left, right):
    if isinstance(left, Unknown):
        return left
    if isinstance(right, Unknown):
        return right
    try:
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if op == "&&":
            return bool(left) and bool(right)
        if op == "||":
            return bool(left) or bool(right)
        if op in ("+", "-", "*", "/", "%", "<", ">", "<=", ">="):
            left, right = _number(left), _number(right)
            return {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                    "/": lambda: left / right, "%": lambda: left % right, "<": lambda: left < right,
                    ">": lambda: left > right, "<=": lambda: left <= right, ">=": lambda: left >= right}[op]()
    except (TypeError, ValueError, ArithmeticError):
        pass
    return Unknown(f"operator {op}")


_FUNCTION_ERRORS = (TypeError, ValueError, IndexError, KeyError, ArithmeticError, AttributeError, StopIteration)


def _failure(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _too_large(size: int) -> None:
    if size > MAX_VALUE_SIZE:
        raise ValueError(f"the result would be {size:,} characters (the limit is {MAX_VALUE_SIZE:,})")


def _format(fmt: str, *args) -> str:
    out, i, arg_i = [], 0, 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            if verb == "%":
                out.append("%")
            elif verb in "sdvq":
                value = args[arg_i]
                arg_i += 1
                text = _str(value)
                if isinstance(text, Unknown):
                    raise ValueError(text.reason)
                out.append(f'"{text}"' if verb == "q" else text)
            else:
                raise ValueError(f"format verb %{verb}")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _merge(*maps):
    out = {}
    for m in maps:
        if not isinstance(m, dict):
            raise TypeError("merge() takes maps")
        out.update(m)
    return out


def _flatten(items) -> list:
    """Elements of nested lists, in order (iteratively: values are at most MAX_VALUE_DEPTH deep anyway)."""
    out = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _join(sep: str, *lists) -> str:
    items = [_str(x) for x in _flatten(list(lists))]
    unknown = next((x for x in items if isinstance(x, Unknown)), None)
    if unknown is not None:
        raise ValueError(unknown.reason)
    _too_large(sum(map(len, items)) + len(sep) * max(len(items) - 1, 0))
    return sep.join(items)


def _re2(pattern: str, text: str):
    """Terraform's regular expressions are RE2's: compiled by RE2, whose matching time is linear."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regular expression {_short(pattern)}: {message}") from None
    if compiled.programsize * max(len(text), 1) > MAX_REGEX_WORK:
        raise ValueError(f"regular expression {_short(pattern)} on {len(text):,} characters is too costly to "
                         "evaluate")
    return compiled


def _regex(pattern: str, text: str):
    """Terraform's regex(): the match, a list of its groups, or a map of its named groups."""
    compiled = _re2(pattern, text)
    match = compiled.search(text)
    if match is None:
        raise ValueError(f"pattern {_short(pattern)} does not match")
    if compiled.groupindex:
        return match.groupdict()
    if compiled.groups:
        return list(match.groups())
    return match.group(0)


_TEMPLATE_REFERENCE = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")  # Go's Regexp.Expand: $$, ${name}, $name, $1


def _replace(s: str, old: str, new: str) -> str:
    """Terraform's replace(): a substring, or a regular expression between slashes with $1 / ${name} in `new`."""
    if not (old.startswith("/") and old.endswith("/") and len(old) > 1):
        count = s.count(old) if old else len(s) + 1
        _too_large(len(s) + count * (len(new) - len(old)))
        return s.replace(old, new)
    compiled = _re2(old[1:-1], s)
    written = [0]

    def expand(match) -> str:
        def group(ref) -> str:
            if ref.group(0) == "$$":
                return "$"
            name = ref.group(1) or ref.group(2)
            try:
                return match.group(int(name) if name.isdigit() else name) or ""
            except (IndexError, KeyError):  # Go expands a group that does not exist to nothing
                return ""
        text = _TEMPLATE_REFERENCE.sub(group, new)
        written[0] += len(text)
        if len(s) + written[0] > MAX_VALUE_SIZE:
            raise ValueError(f"the result would be longer than {MAX_VALUE_SIZE:,} characters")
        return text
    return compiled.sub(expand, s)


_FUNCTIONS = {
    "dirname": lambda p: posixpath.dirname(p.rstrip("/")) if p.rstrip("/") else "/",
    "basename": lambda p: posixpath.basename(p.rstrip("/")),
    "abspath": posixpath.normpath,
    "format": _format,
    "join": _join,
    "concat": lambda *lists: [x for lst in lists for x in lst],
    "flatten": _flatten,
    "merge": _merge,
    "lookup": lambda m, k, *default: m[k] if k in m or not default else default[0],
    "coalesce": lambda *a: next(x for x in a if x not in (None, "")),
    "lower": str.lower,
    "upper": str.upper,
    "trimspace": str.strip,
    "trimprefix": lambda s, p: s[len(p):] if s.startswith(p) else s,
    "trimsuffix": lambda s, p: s[:-len(p)] if p and s.endswith(p) else s,
    "trim": lambda s, chars: s.strip(chars),
    "replace": _replace,
    "regex": _regex,
    "substr": lambda s, offset, length: s[offset:] if length == -1 else s[offset:offset + length],
    "compact": lambda items: [x for x in items if x not in ("", None)],
    "reverse": lambda items: list(reversed(items)),
    "slice": lambda items, start, end: items[start:end],
    "contains": lambda items, value: value in items,
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "split": lambda sep, s: s.split(sep),
    "element": lambda lst, i: lst[int(i) % len(lst)],
    "length": len,
    "tostring": lambda v: _str(v),
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "strcontains": lambda s, p: p in s,
    "tolist": list,
    "toset": lambda v: sorted(set(v)),
    "tomap": dict,
}
_LENIENT = frozenset({"merge", "concat", "lookup", "tolist", "toset", "tomap", "flatten"})
# functions whose result can be as large as all their arguments together (the others' results are bounded by one
# argument's size, or checked before they are built: join, replace)
_COMBINING = frozenset({"concat", "merge", "format"})


def _scope_fn(body):
    def wrapper(ev: UnitEvaluator, scope: Scope, args: list):
        if any(isinstance(a, Unknown) for a in args):
            return next(a for a in args if isinstance(a, Unknown))
        return body(ev, scope, args)
    return wrapper


def _include_dir(scope: Scope, args: list) -> str:
    selected = scope.selected_include(args)
    return rel_dir(selected) if selected is not None else rel_dir(scope.config_path)


def _read_config(ev: UnitEvaluator, scope: Scope, args: list):
    if not args or not isinstance(args[0], str):
        return Unknown("read_terragrunt_config() path")
    target = ev._config_target(resolve_path(scope.config_dir, args[0]))
    if target in ev._configs:  # one scope per file: its locals are evaluated once, and loops are found
        return ev._configs[target]
    facts = ev.view.facts(target) if ev.inputs.file(target) is not None else None
    if facts is None:
        return args[1] if len(args) > 1 else Unknown(f"{target} does not exist")
    config = ev._configs[target] = _Config(Scope(ev, target, facts, target))
    return config


def _file_fn(ev: UnitEvaluator, scope: Scope, args: list):
    return Unknown("file contents are not evaluated")


def _fileexists(ev: UnitEvaluator, scope: Scope, args: list):
    return ev.inputs.file(resolve_path(scope.config_dir, args[0])) is not None


def _get_env(ev: UnitEvaluator, scope: Scope, args: list):
    name = args[0] if args else "?"
    return Unknown(f"get_env({name!r}) is only known at run time")


_IO_FUNCTIONS = {
    "find_in_parent_folders": lambda ev, scope, args: ev.find_in_parent_folders(scope, args),
    "get_terragrunt_dir": _scope_fn(lambda ev, scope, args: to_abs(rel_dir(scope.config_path))),
    "get_original_terragrunt_dir": _scope_fn(lambda ev, scope, args: to_abs(rel_dir(scope.config_path))),
    "get_parent_terragrunt_dir": _scope_fn(lambda ev, scope, args: to_abs(_include_dir(scope, args))),
    "path_relative_to_include": _scope_fn(
        lambda ev, scope, args: _relpath(rel_dir(scope.config_path), _include_dir(scope, args))),
    "path_relative_from_include": _scope_fn(
        lambda ev, scope, args: _relpath(_include_dir(scope, args), rel_dir(scope.config_path))),
    "get_repo_root": _scope_fn(lambda ev, scope, args: ROOT),
    "get_path_to_repo_root": _scope_fn(lambda ev, scope, args: _relpath("", rel_dir(scope.config_path))),
    "get_path_from_repo_root": _scope_fn(lambda ev, scope, args: _relpath(rel_dir(scope.config_path), "")),
    "read_terragrunt_config": _scope_fn(_read_config),
    "file": _file_fn, "templatefile": _file_fn, "filebase64": _file_fn, "sops_decrypt_file": _file_fn,
    "read_tfvars_file": _file_fn,
    "fileexists": _scope_fn(_fileexists),
    "get_env": _get_env,
    "yamldecode": lambda ev, scope, args: Unknown("decoded file contents are not evaluated"),
    "jsondecode": lambda ev, scope, args: Unknown("decoded file contents are not evaluated"),
}
