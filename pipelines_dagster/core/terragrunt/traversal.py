"""What one unit depends on: its configuration followed through includes, configurations and files read,
dependencies, its terraform source, and the local Terraform modules it runs, recursively.

Where a value that reaches a path cannot be known statically the unit is flagged conservative and a warning
names the file, line and expression; problems are bounded (MAX_PROBLEMS per unit, MAX_MESSAGE_CHARS each), and
so is the nesting of configurations read by configurations (MAX_READ_DEPTH).
"""

from dataclasses import dataclass, field

from .interpreter import Interpreter, Scope
from .paths import config_file, rel_dir, resolve_path, split_source
from .values import EvalError, Unknown, to_string

MAX_READ_DEPTH = 32  # configuration files read by configuration files read by the unit
MAX_PROBLEMS = 50  # problems listed per unit
MAX_MESSAGE_CHARS = 600


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


class UnitEvaluator(Interpreter):
    """Evaluates one unit (and everything it includes, reads and runs) at one tree."""

    def __init__(self, view) -> None:
        super().__init__(view)
        self.result = UnitEval()
        self._processed: set[tuple[str, str]] = set()
        self._reading = 0  # configuration files being processed inside each other
        self._unlisted: dict[str, int] = {}  # severity -> problems beyond MAX_PROBLEMS

    # ---- entry points -------------------------------------------------------------------------------------

    def terragrunt_unit(self, unit_dir: str) -> UnitEval:
        config = config_file(unit_dir)
        source = self._process_config(config, config, own_unit=True)
        module_dir: str | None = unit_dir
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
                    item = to_string(item)
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
            return to_string(self.eval(expr, scope)), True
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
            target = self.inputs.terragrunt_config(target)
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
