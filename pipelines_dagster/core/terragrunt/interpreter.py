"""The expression interpreter: the IR of parse.py evaluated in a scope (one file, the Terragrunt config it runs
as), with locals, exposed includes and configurations read, bounded in nesting (MAX_EVAL_DEPTH) and in work
(MAX_EVAL_STEPS per unit)."""

from dataclasses import dataclass, field

from .functions import COMBINING, FUNCTION_ERRORS, FUNCTIONS, LENIENT, TREE_FUNCTIONS, failure
from .paths import rel_dir, to_abs
from .tree import Inputs, TreeView
from .values import (
    MAX_VALUE_DEPTH,
    MAX_VALUE_SIZE,
    TOO_DEEP,
    TOO_LARGE,
    Limit,
    SizedList,
    SizedMap,
    Unknown,
    bounded,
    measure,
    shorten,
    sized,
    to_string,
)

MAX_EVAL_DEPTH = 150  # expressions being evaluated inside each other (through locals and configs read)
MAX_EVAL_STEPS = 2_000_000  # expressions evaluated plus elements measured, per unit


class Config:
    """A terragrunt configuration read with read_terragrunt_config(): attributes evaluated on demand."""

    def __init__(self, scope: "Scope"):
        self.scope = scope

    def get(self, name: str):
        if name == "locals":
            return Locals(self.scope)
        return Unknown(f"{name} of {self.scope.file} is not evaluated statically")


class Locals:
    def __init__(self, scope: "Scope"):
        self.scope = scope

    def get(self, name: str):
        return self.scope.local(name)


class Includes:
    def __init__(self, exposed: dict[str, "Scope"]):
        self.exposed = exposed

    def get(self, name: str):
        scope = self.exposed.get(name)
        if scope is None:
            return Unknown(f"include.{name} is not an exposed include")
        return Config(scope)


@dataclass
class Scope:
    """Where expressions of one file are evaluated: the file, and the Terragrunt config path they run as."""

    ev: "Interpreter"
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


class Interpreter:
    """Evaluates expressions of files of one tree, recording what it looks at in `inputs`; its budget of steps
    is shared by every expression it evaluates."""

    def __init__(self, view: TreeView):
        self.view = view
        self.inputs = Inputs(view)
        self._configs: dict[str, Config] = {}  # read_terragrunt_config() values, by file
        self._depth = 0  # expressions being evaluated inside each other
        self._steps = MAX_EVAL_STEPS

    def read_config(self, target: str) -> Config | None:
        """read_terragrunt_config() of an existing file, None when it does not exist. One scope per file: its
        locals are evaluated once, and loops are found."""
        config = self._configs.get(target)
        if config is None and self.inputs.file(target) is not None:
            config = self._configs[target] = Config(Scope(self, target, self.view.facts(target), target))
        return config

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
                    value = to_string(self.eval(part, scope))
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
                return self._collection(SizedList(self.eval(e, scope) for e in expr[1]))
            if kind == "obj":
                obj = SizedMap()
                for key_expr, value_expr in expr[1]:
                    key = to_string(self.eval(key_expr, scope))
                    if isinstance(key, Unknown):
                        return key
                    obj[key] = self.eval(value_expr, scope)
                return self._collection(obj)
            if kind == "cond":
                cond = self.eval(expr[1], scope)
                if isinstance(cond, bool):
                    return self.eval(expr[2] if cond else expr[3], scope)
                return cond if isinstance(cond, Unknown) else Unknown("condition is not a boolean")
            if kind == "bin":
                return bounded(_binary(expr[1], self.eval(expr[2], scope), self.eval(expr[3], scope)))
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

    def _collection(self, value: SizedList | SizedMap) -> SizedList | SizedMap | Limit:
        """A new list or map: its size from its elements' sizes (each element is measured once)."""
        self._steps -= len(value)
        size, depth = len(value), 0
        if isinstance(value, SizedMap):
            size += sum(map(len, value))
        for item in (value.values() if isinstance(value, SizedMap) else value):
            if isinstance(item, Limit):  # a collection holding a value too large is too large
                return item
            item_size, item_depth = measure(item)
            size += item_size
            if item_depth >= depth:
                depth = item_depth + 1
        if size > MAX_VALUE_SIZE:
            return Limit(TOO_LARGE)
        if depth > MAX_VALUE_DEPTH:
            return Limit(TOO_DEEP)
        value.size, value.depth = size, depth
        return value

    def _variable(self, name: str, scope: Scope):
        if name == "local":
            return Locals(scope)
        if name == "include":
            return Includes(scope.exposed)
        if name == "path" and scope.terraform:
            here = to_abs(rel_dir(scope.file))
            return sized({"module": here, "root": here, "cwd": here})
        if name in ("dependency", "var", "feature", "values"):
            return Unknown(f"{name}.* is only known at run time")
        return Unknown(f"unknown variable {shorten(name)}")

    def _call(self, name: str, arg_exprs: list, scope: Scope):
        if name == "try":
            for arg in arg_exprs:
                value = self.eval(arg, scope)
                if not isinstance(value, Unknown):
                    return value
            return Unknown("no argument of try() could be evaluated")
        args = [self.eval(a, scope) for a in arg_exprs]
        if name in COMBINING and sum(measure(a)[0] for a in args) > MAX_VALUE_SIZE:
            return Limit(f"arguments of {name}() larger than {MAX_VALUE_SIZE:,} elements and characters")
        fn = FUNCTIONS.get(name)
        if fn is None:
            if name in TREE_FUNCTIONS:
                try:
                    result = TREE_FUNCTIONS[name](self, scope, args)
                except FUNCTION_ERRORS as exc:
                    return Unknown(f"{name}() failed: {failure(exc)}")
                return result if result.__class__ is str and len(result) <= MAX_VALUE_SIZE else bounded(result)
            return Unknown(f"function {shorten(name)}() is not evaluated statically")
        for arg in args:
            if isinstance(arg, Unknown) and (name not in LENIENT or isinstance(arg, Limit)):
                return arg
        try:
            result = fn(*args)
        except FUNCTION_ERRORS as exc:
            return Unknown(f"{name}() failed: {failure(exc)}")
        return result if result.__class__ is str and len(result) <= MAX_VALUE_SIZE else bounded(result)


def _get(base, key):
    if isinstance(base, Unknown):
        return base
    if isinstance(key, Unknown):
        return key
    if isinstance(base, (Locals, Config, Includes)):
        return base.get(key) if isinstance(key, str) else Unknown(f"cannot index {_kind(base)} with {shorten(key)}")
    if isinstance(base, dict) and isinstance(key, (str, int, float)):
        key = to_string(key)
        return base[key] if key in base else Unknown(f"key {shorten(key)} not found")
    if isinstance(base, list) and isinstance(key, int) and not isinstance(key, bool):
        return base[key] if -len(base) <= key < len(base) else Unknown(f"index {key} out of range")
    return Unknown(f"cannot index {_kind(base)} with {shorten(key)}")


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
    if isinstance(value, Locals):
        return "local"
    if isinstance(value, Includes):
        return "include"
    return "a configuration" if isinstance(value, Config) else "null"


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
