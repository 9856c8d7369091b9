"""The package's layers: every module imports only from its own layer and the layers below it, and Dagster only
from `defs` up. Every import counts, lazy ones inside functions included.

    foundation    settings, redact                   nothing of the package
    integrations  git, GitHub clients                foundation
    core          detection, execution, reporting    integrations, foundation; no Dagster
    defs          the Dagster layer                  core, integrations, foundation
    entry points  definitions (and its plan and      anything
                  apply locations), cli, demo,
                  step_preload (the forkserver preloads the whole code location)

Inside core, `core.terragrunt` (parsing and static evaluation) and `core.graph` import nothing else of the
package.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = "pipelines_dagster"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS = ["foundation", "integrations", "core", "defs", "entry points"]
LAYER_OF = {  # module prefix -> layer; the longest prefix wins
    PACKAGE: "foundation",
    f"{PACKAGE}.settings": "foundation",
    f"{PACKAGE}.redact": "foundation",
    f"{PACKAGE}.integrations": "integrations",
    f"{PACKAGE}.core": "core",
    f"{PACKAGE}.defs": "defs",
    f"{PACKAGE}.step_preload": "entry points",
    f"{PACKAGE}.definitions": "entry points",
    f"{PACKAGE}.plan_location": "entry points",
    f"{PACKAGE}.apply_location": "entry points",
    f"{PACKAGE}.cli": "entry points",
    f"{PACKAGE}.demo": "entry points",
}
SELF_CONTAINED = [f"{PACKAGE}.core.terragrunt", f"{PACKAGE}.core.graph"]
DAGSTER_FROM = "defs"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str:
    return LAYER_OF[max((p for p in LAYER_OF if _within(module, p)), key=len)]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, is_package: bool, tree: ast.AST, known: set[str]):
    """(line, imported module) for every import in the tree, relative ones resolved; `from X import name` names
    the module X.name when that is a module of the package."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in known else base


def violations(module: str, source: str, is_package: bool, known: set[str]) -> list[str]:
    """Why each offending import of one module breaks the layering (empty when none does)."""
    own = layer_of(module)
    found = []
    for line, target in imported(module, is_package, ast.parse(source), known):
        where = f"{module} (line {line}) imports {target}"
        if _within(target, PACKAGE):
            theirs = layer_of(target)
            if LAYERS.index(theirs) > LAYERS.index(own):
                found.append(f"{where}: {own} must not import {theirs}")
            for leaf in SELF_CONTAINED:
                if _within(module, leaf) and not _within(target, leaf) and target != PACKAGE:
                    found.append(f"{where}: {leaf} imports nothing else of the package")
        elif target.split(".")[0] == "dagster" or target.startswith("dagster_"):
            if LAYERS.index(own) < LAYERS.index(DAGSTER_FROM):
                found.append(f"{where}: {own} must not import Dagster")
    return found


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_layer():
    modules = package_modules()
    assert len(modules) > 40 and {layer_of(m) for m in modules} == set(LAYERS)


def test_no_module_imports_from_a_higher_layer():
    modules = package_modules()
    known = set(modules)
    found = [v for name, path in modules.items()
             for v in violations(name, path.read_text(), path.name == "__init__.py", known)]
    assert not found, "imports that break the layering:\n" + "\n".join(found)


KNOWN = {f"{PACKAGE}.core", f"{PACKAGE}.core.model", f"{PACKAGE}.core.terragrunt", f"{PACKAGE}.core.graph",
         f"{PACKAGE}.integrations", f"{PACKAGE}.integrations.git", f"{PACKAGE}.defs", f"{PACKAGE}.settings"}


@pytest.mark.parametrize("module, source, expected", [
    # a lazy import inside a function, relative, two levels up
    (f"{PACKAGE}.integrations.git", "def f():\n    from ..core.model import Event\n",
     [f"{PACKAGE}.integrations.git (line 2) imports {PACKAGE}.core.model: integrations must not import core"]),
    # `from .. import core`: the submodule is what is imported
    (f"{PACKAGE}.integrations.git", "from .. import core\n",
     [f"{PACKAGE}.integrations.git (line 1) imports {PACKAGE}.core: integrations must not import core"]),
    (f"{PACKAGE}.core.model", "import dagster as dg\n",
     [f"{PACKAGE}.core.model (line 1) imports dagster: core must not import Dagster"]),
    (f"{PACKAGE}.core.model", "if True:\n    from dagster_aws.utils import x\n",
     [f"{PACKAGE}.core.model (line 2) imports dagster_aws.utils: core must not import Dagster"]),
    (f"{PACKAGE}.settings", f"from {PACKAGE}.integrations import git\n",
     [f"{PACKAGE}.settings (line 1) imports {PACKAGE}.integrations.git: foundation must not import integrations"]),
    (f"{PACKAGE}.core.graph", "from .model import Event\n",
     [f"{PACKAGE}.core.graph (line 1) imports {PACKAGE}.core.model: {PACKAGE}.core.graph imports nothing else "
      "of the package"]),
    # what is allowed
    (f"{PACKAGE}.core.orchestrator", "from ..integrations import git\nfrom .graph import waves\n", []),
    (f"{PACKAGE}.core.terragrunt.interpreter", "from .values import Unknown\nfrom . import paths\n", []),
    (f"{PACKAGE}.defs.jobs", "import dagster as dg\nfrom ..core import model\n", []),
])
def test_offending_imports_are_named(module, source, expected):
    assert violations(module, source, False, KNOWN) == expected


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def test_modules_and_functions_stay_readable():
    """No module of the package over 450 lines, no function over 80: a role that grows gets a module of its own."""
    too_long = []
    for name, path in package_modules().items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1}")
    assert too_long == []
