"""What is deployed where, read from the deploy branch: accounts, units and the dependencies between them.

The Dagster layer turns a `Lineage` into asset specs; this module decides which units, which accounts and which
dependencies there are, and the readable names they get (asset key parts, group names). A `Lineage` is plain
JSON, so that Dagster can hand it from the code server to run workers unchanged instead of reading git again.

Reading it never fetches or clones (a code location must load fast): a remote URL is read from its local
mirror, which the sensors keep fetched; when there is none yet, or no repository at all, the lineage is empty
and `notes` says why.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

UNITS_PREFIX = "units"
ACCOUNTS_PREFIX = "accounts"
ROOT_UNIT_PART = "_repository_root"
NO_ACCOUNT_GROUP = "no_account"
_KEY_PART_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class AccountNode:
    name: str
    id: str
    email: str | None = None
    deploy_order: int | None = None
    plan_role_arn: str = ""
    apply_role_arn: str = ""
    session_duration_s: int = 3600
    region: str | None = None


@dataclass
class UnitNode:
    path: str
    kind: str  # UnitKind value
    engine: str
    account: str | None
    depends_on: list[str] = field(default_factory=list)  # units only, never forming a cycle


@dataclass
class Lineage:
    location: str | None = None
    deploy_branch: str | None = None
    commit: str | None = None  # full sha of the deploy-branch head that was read; None when nothing was read
    accounts: list[AccountNode] = field(default_factory=list)
    units: list[UnitNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why something is missing, what was left out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Lineage":
        data = json.loads(text)
        return cls(location=data["location"], deploy_branch=data["deploy_branch"], commit=data["commit"],
                   accounts=[AccountNode(**a) for a in data["accounts"]],
                   units=[UnitNode(**u) for u in data["units"]], notes=list(data["notes"]))

    def account(self, name: str | None) -> AccountNode | None:
        return next((a for a in self.accounts if a.name == name), None)


# ------------------------------------------------------------------------------------------------ names


def key_part(text: str) -> str:
    """One readable asset key part: kept as it is when made of letters, digits, '_', '.', '-'; otherwise those
    characters replace the others, and a short hash of the original keeps different names apart."""
    if text and text not in (".", "..") and not _KEY_PART_CHARS.search(text):
        return text
    return f"{_KEY_PART_CHARS.sub('_', text)}_{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def unit_key(path: str) -> list[str]:
    """["units", *path parts]: the unit id (its path) is what stays stable when accounts are remapped."""
    return [UNITS_PREFIX, *(key_part(p) for p in path.split("/"))] if path else [UNITS_PREFIX, ROOT_UNIT_PART]


def account_key(name: str) -> list[str]:
    return [ACCOUNTS_PREFIX, key_part(name)]


def group_name(account: str | None) -> str:
    """A valid Dagster group name for an account (letters, digits and '_')."""
    if not account:
        return NO_ACCOUNT_GROUP
    name = _GROUP_CHARS.sub("_", account)
    return name if name[0].isalpha() else f"account_{name}"


# ------------------------------------------------------------------------------------------------ reading


def read_lineage(location: str | None, deploy_branch: str | None = None, *, cache_root=None,
                 index_cache=None) -> Lineage:
    """The accounts and units at the head of the deploy branch of `location` (a path or a mirrored URL);
    `cache_root` holds the mirrors, `index_cache` the parse cache (None: none)."""
    from ..integrations.git import GitError, branch_sha, open_git_dir
    from .repo_files import ConfigError
    from .trust import deploy_branch as find_deploy_branch

    if not location:
        return Lineage(notes=["PIPELINES_REPO_URL is not set: there are no unit assets"])
    try:
        git_dir = open_git_dir(location, fetch=False, clone=False, cache_root=cache_root)
        branch = find_deploy_branch(git_dir, deploy_branch)
        sha = branch_sha(git_dir, branch)
    except (GitError, ConfigError) as exc:
        return Lineage(location=location, deploy_branch=deploy_branch,
                       notes=[f"{exc}: there are no unit assets until the asset graph sensor can read it"])
    if sha is None:
        return Lineage(location=location, deploy_branch=branch,
                       notes=[f"the deploy branch {branch!r} is not in {location}: there are no unit assets"])
    lineage = Lineage(location=location, deploy_branch=branch, commit=sha)
    try:
        return _lineage_at(git_dir, sha, lineage, index_cache)
    except Exception as exc:  # noted, with the commit: the code location loads, and is not reloaded in a loop
        return Lineage(location=location, deploy_branch=branch, commit=sha,
                       notes=[f"reading {branch} at {sha[:12]} failed: {type(exc).__name__}: {exc}"])


def _lineage_at(git_dir, sha: str, lineage: Lineage, cache_dir) -> Lineage:
    from .credentials import role_arn_for
    from .graph import back_edges
    from .orchestrator import Orchestrator

    side, index = Orchestrator(git_dir, cache_dir).repository_at(sha)
    lineage.notes += [str(p) for p in side.config_problems + side.account_problems]
    if side.accounts is not None:
        roles = side.config.roles
        lineage.accounts = [AccountNode(name, a.id, a.email, a.deploy_order, role_arn_for(a, "plan", roles),
                                        role_arn_for(a, "apply", roles), roles.session_duration_s, a.region)
                            for name, a in sorted(side.accounts.entries.items())]
    paths = sorted(index.units)
    deps = {p: sorted({d for d in index.dependencies(p) if d in index.units and d != p}) for p in paths}
    for unit, dep in back_edges(deps):
        deps[unit].remove(dep)
        lineage.notes.append(f"{unit} -> {dep} closes a dependency cycle: that dependency is left out of the "
                             "asset graph")
    for path in paths:
        kind = index.kind(path)
        lineage.units.append(UnitNode(path=path, kind=kind.value, engine=side.config.engine_for(path, kind),
                                      account=side.config.account_for(path, side.accounts), depends_on=deps[path]))
    return lineage

