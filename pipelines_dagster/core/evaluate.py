"""Static evaluation of Terragrunt and Terraform configuration, as Terragrunt does it, over a git tree.

Only what decides which files a unit depends on is evaluated: include paths, read_terragrunt_config / file()
arguments, dependency paths, terraform sources and module sources, and the locals they use. Everything else stays
unevaluated. A value that cannot be known statically is `Unknown`; where one reaches a path the unit is flagged
conservative and a warning names the file, line and expression.
"""

import posixpath
from dataclasses import dataclass, field

ROOT = "/.pipelines-repo"  # where the repository root appears to evaluated expressions (get_repo_root())
TERRAGRUNT_FILE = "terragrunt.hcl"


class Unknown:
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unknown({self.reason})"


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
        raise EvalError(f"path {abs_path!r} escapes the repository")
    return norm[len(ROOT) + 1:]


def rel_dir(path: str) -> str:
    return posixpath.dirname(path)


def resolve_path(base_dir_rel: str, value: str) -> str:
    """A path as written in configuration, relative to base_dir, as a repo-relative path."""
    embedded = value.rfind(ROOT + "/")
    if embedded > 0 or (embedded < 0 and value.endswith(ROOT) and len(value) > len(ROOT)):
        # "${get_terragrunt_dir()}/${find_in_parent_folders("x")}": written for Terragrunt versions whose
        # find_in_parent_folders returned a relative path; the absolute part is the file meant
        value = value[embedded:] if embedded > 0 else ROOT
    try:
        return to_rel(value if value.startswith("/") else posixpath.join(to_abs(base_dir_rel), value))
    except EvalError:
        raise EvalError(f"path {value!r} escapes the repository") from None


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


class UnitEvaluator:
    """Evaluates one unit (and everything it includes, reads and runs) at one tree."""

    def __init__(self, view: TreeView):
        self.view = view
        self.inputs = Inputs(view)
        self.result = UnitEval()
        self._processed: set[tuple[str, str]] = set()

    # ---- entry points -------------------------------------------------------------------------------------

    def terragrunt_unit(self, unit_dir: str) -> UnitEval:
        config = posixpath.join(unit_dir, TERRAGRUNT_FILE) if unit_dir else TERRAGRUNT_FILE
        source = self._process_config(config, config, own_unit=True)
        module_dir = unit_dir
        if source is not None:
            module_dir = self._terragrunt_source(source)
        if module_dir is not None:
            self._module_closure(module_dir, own_dir=unit_dir)
        return self.result

    def terraform_unit(self, unit_dir: str) -> UnitEval:
        self._module_closure(unit_dir, own_dir=unit_dir)
        return self.result

    # ---- problems ------------------------------------------------------------------------------------------

    def error(self, file: str, line: int | None, message: str) -> None:
        self.result.problems.append(Problem("error", file, line, message))

    def unresolved(self, file: str, line: int | None, text: str, reason: str) -> None:
        self.result.conservative = True
        self.result.problems.append(Problem(
            "warning", file, line,
            f"cannot evaluate {text} statically ({reason}); the unit is planned for any .hcl change in its parent "
            "folders or in _envcommon"))

    # ---- configuration files -------------------------------------------------------------------------------

    def _facts(self, rel: str) -> dict | None:
        if self.inputs.file(rel) is None:
            return None
        facts = self.view.facts(rel)
        err = facts.get("syntax_error")
        if err:
            self.result.conservative = True
            self.error(rel, err["line"], f"{err['message']} (column {err['col']})")
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
            self._process_config(target, target, read=True)
        else:
            self.result.reads.add(target)
            if self.inputs.file(target) is None and not self.inputs.isdir(target):
                self.result.conservative = True
                self.result.problems.append(Problem(
                    "warning", scope.file, site["line"],
                    f"{fname}() reads {target}, which does not exist at this commit (generated or ignored file?); "
                    "the unit is planned for any .hcl change in its parent folders or in _envcommon"))

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
        if kind == "tpl":
            out = []
            for part in expr[1]:
                value = _str(self.eval(part, scope))
                if isinstance(value, Unknown):
                    return value
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
            return [self.eval(e, scope) for e in expr[1]]
        if kind == "obj":
            out = {}
            for key_expr, value_expr in expr[1]:
                key = _str(self.eval(key_expr, scope))
                if isinstance(key, Unknown):
                    return key
                out[key] = self.eval(value_expr, scope)
            return out
        if kind == "cond":
            cond = self.eval(expr[1], scope)
            if isinstance(cond, bool):
                return self.eval(expr[2] if cond else expr[3], scope)
            return cond if isinstance(cond, Unknown) else Unknown("condition is not a boolean")
        if kind == "bin":
            return _binary(expr[1], self.eval(expr[2], scope), self.eval(expr[3], scope))
        if kind == "un":
            value = self.eval(expr[2], scope)
            if isinstance(value, Unknown):
                return value
            if expr[1] == "!" and isinstance(value, bool):
                return not value
            if expr[1] == "-" and isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
            return Unknown(f"operator {expr[1]}")
        return Unknown(f"{expr[1]} is not evaluated statically")

    def _variable(self, name: str, scope: Scope):
        if name == "local":
            return _Locals(scope)
        if name == "include":
            return _Includes(scope.exposed)
        if name == "path" and scope.terraform:
            here = to_abs(rel_dir(scope.file))
            return {"module": here, "root": here, "cwd": here}
        if name in ("dependency", "var", "feature", "values"):
            return Unknown(f"{name}.* is only known at run time")
        return Unknown(f"unknown variable {name!r}")

    def _call(self, name: str, arg_exprs: list, scope: Scope):
        if name == "try":
            for arg in arg_exprs:
                value = self.eval(arg, scope)
                if not isinstance(value, Unknown):
                    return value
            return Unknown("no argument of try() could be evaluated")
        args = [self.eval(a, scope) for a in arg_exprs]
        fn = _FUNCTIONS.get(name)
        if fn is None:
            if name in _IO_FUNCTIONS:
                return _IO_FUNCTIONS[name](self, scope, args)
            return Unknown(f"function {name}() is not evaluated statically")
        if name not in _LENIENT and any(isinstance(a, Unknown) for a in args):
            return next(a for a in args if isinstance(a, Unknown))
        try:
            return fn(*args)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            return Unknown(f"{name}() failed: {exc}")

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
        return base.get(key)
    if isinstance(base, dict):
        return base[key] if key in base else Unknown(f"key {key!r} not found")
    if isinstance(base, list) and isinstance(key, int) and not isinstance(key, bool):
        return base[key] if -len(base) <= key < len(base) else Unknown(f"index {key} out of range")
    return Unknown(f"cannot index {type(base).__name__} with {key!r}")


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
            if isinstance(left, str):
                left = float(left) if "." in left else int(left)
            if isinstance(right, str):
                right = float(right) if "." in right else int(right)
            return {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                    "/": lambda: left / right, "%": lambda: left % right, "<": lambda: left < right,
                    ">": lambda: left > right, "<=": lambda: left <= right, ">=": lambda: left >= right}[op]()
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    return Unknown(f"operator {op}")


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


def _flatten(items):
    out = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _regex(pattern: str, text: str):
    """Terraform's regex(): the match, a list of its groups, or a map of its named groups."""
    import re

    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"pattern {pattern!r} does not match")
    if match.re.groupindex:
        return match.groupdict()
    if match.re.groups:
        return list(match.groups())
    return match.group(0)


def _replace(s, old, new):
    if old.startswith("/") and old.endswith("/") and len(old) > 1:
        raise ValueError("regular-expression replace")
    return s.replace(old, new)


_FUNCTIONS = {
    "dirname": lambda p: posixpath.dirname(p.rstrip("/")) if p.rstrip("/") else "/",
    "basename": lambda p: posixpath.basename(p.rstrip("/")),
    "abspath": posixpath.normpath,
    "format": _format,
    "join": lambda sep, *lists: sep.join(_str(x) for x in _flatten(list(lists))),
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
    facts = ev.view.facts(target) if ev.inputs.file(target) is not None else None
    if facts is None:
        return args[1] if len(args) > 1 else Unknown(f"{target} does not exist")
    return _Config(Scope(ev, target, facts, target))


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
