"""Which configuration a run may trust: the deploy branch, and `.pipelines.yml` plus the accounts file at a commit.

Everything that decides credentials or what runs (accounts, roles, engines, ignore globs, extra units, account
mapping, dependencies) comes from `refs/heads/<deploy branch>`, never from the ref under review: a pull request
that edits `.pipelines.yml` or `accounts.yml` sees its edits take effect only once they are merged. The deploy
branch itself comes from the deployment (an override), else from `.pipelines.yml` on the repository's default
branch. Branches are always looked up as `refs/heads/<name>`, so a tag cannot stand for one.
"""

from dataclasses import dataclass

from .model import Problem
from .repo_files import PIPELINES_FILE, Accounts, ConfigError, PipelinesConfig, load_accounts, load_pipelines_config

DEFAULT_DEPLOY_BRANCH = "main"


@dataclass
class RepoConfig:
    config: PipelinesConfig
    accounts: Accounts | None


@dataclass
class TrustedConfig(RepoConfig):
    """The configuration of the deploy branch's head, `sha`."""

    branch: str = DEFAULT_DEPLOY_BRANCH
    sha: str = ""


def config_at(repo, sha: str) -> PipelinesConfig:
    """`.pipelines.yml` at a commit (defaults when there is none); ConfigError when it is unusable."""
    from ..integrations.git_tree import read_blobs

    text = read_blobs(repo, [f"{sha}:{PIPELINES_FILE}"]).get(f"{sha}:{PIPELINES_FILE}")
    return load_pipelines_config(text.decode("utf-8", errors="replace") if text is not None else None)


def load_repo_config(repo, sha: str) -> RepoConfig:
    """`.pipelines.yml` and the accounts file at a commit; ConfigError when they are unusable."""
    from ..integrations.git_tree import read_blobs

    config = config_at(repo, sha)
    spec = f"{sha}:{config.accounts_file}"
    raw = read_blobs(repo, [spec]).get(spec)
    if raw is None:
        return RepoConfig(config, None)
    accounts, problems = load_accounts(raw.decode("utf-8", errors="replace"), config.accounts_file)
    if problems:
        raise ConfigError(problems)
    return RepoConfig(config, accounts)


def deploy_branch(repo, override: str | None = None) -> str:
    """The deploy branch: the deployment's `override` (PIPELINES_DEPLOY_BRANCH), else the repository's default
    branch, else "main". A `.pipelines.yml` on the default branch naming another deploy branch is a ConfigError:
    whoever can push the default branch would otherwise choose which branch is applied, so only the deployment
    may name one that is not the default branch."""
    from ..integrations.git import branch_sha, default_branch

    if override:
        return override
    default = default_branch(repo)
    sha = branch_sha(repo, default) if default else None
    if not default or sha is None:
        return DEFAULT_DEPLOY_BRANCH
    try:
        config = config_at(repo, sha)
    except ConfigError:
        return default
    named = config.deploy_branch if "deploy_branch" in config.model_fields_set else default
    if named != default:
        raise ConfigError([Problem(file=PIPELINES_FILE, message=(
            f"names the deploy branch {named!r}, which is not the default branch {default!r}: only the deployment "
            f"may choose it (set PIPELINES_DEPLOY_BRANCH={named}); until then nothing is planned or applied"))])
    return default


def trusted_config(repo, override: str | None = None, accounts: bool = True) -> TrustedConfig:
    """The configuration (and, with `accounts`, the accounts) of `refs/heads/<deploy branch>`; ConfigError when the
    branch is missing or what is read is unusable."""
    from ..integrations.git import branch_sha

    branch = deploy_branch(repo, override)
    sha = branch_sha(repo, branch)
    if sha is None:
        raise ConfigError([Problem(file=None, message=f"the deploy branch {branch!r} does not exist: configuration, "
                                                      "accounts and roles are only read from it")])
    found = load_repo_config(repo, sha) if accounts else RepoConfig(config_at(repo, sha), None)
    return TrustedConfig(found.config, found.accounts, branch=branch, sha=sha)


class LaunchRefused(ValueError):
    """What a run was asked to do is not allowed; the message says why and what would be."""


def push_range(repo, branch: str, head: str, base: str | None = None, head_ref: str | None = None
               ) -> tuple[str, str]:
    """(base, head) of an apply, both full shas on the first-parent line of `refs/heads/<branch>` (the commits the
    branch itself was at: what pushing it applied), the base before the head; the base is the head's first parent
    unless given. LaunchRefused otherwise: an apply role only ever runs code the deploy branch has held, and a
    destroy (which runs at the base) too. `head_ref`: what the head was called, for the messages."""
    from ..integrations.git import GitError, branch_sha, is_ancestor, on_first_parent_line, resolve

    tip = branch_sha(repo, branch)
    if tip is None:
        raise LaunchRefused(f"the deploy branch {branch!r} does not exist")
    named = f"{head_ref} ({head[:12]})" if head_ref and head_ref != head else head[:12]
    if not on_first_parent_line(repo, head, tip):
        raise LaunchRefused(f"{named} is not on the deploy branch {branch}: a push applies deploy-branch commits "
                            "only (the commits the branch itself was at, not those of the branches merged into it)")
    if base is None:
        try:
            return resolve(repo, f"{head}^1"), head
        except GitError:
            raise LaunchRefused(f"{named} has no parent to apply from: give base_ref") from None
    if not on_first_parent_line(repo, base, tip):
        raise LaunchRefused(f"base {base[:12]} is not on the deploy branch {branch}: a push's changes start at an "
                            "earlier commit of the deploy branch (default: the head's first parent)")
    if base != head and not is_ancestor(repo, base, head):
        raise LaunchRefused(f"base {base[:12]} comes after head {head[:12]} on the deploy branch {branch}")
    return base, head


def check_push_changes(repo, base: str, head: str, changes) -> None:
    """What a push's step is asked to do must be what its range says: a unit is destroyed only when the head no
    longer has it, and applied only when the head has it (a step's input comes from storage, which another run's
    worker could write). LaunchRefused otherwise."""
    from .executor import unit_kind
    from .model import Action

    for change in changes:
        if change.unit is None:
            continue
        at_head = unit_kind(repo, head, change.unit) is not None
        if change.action is Action.DESTROY and (at_head or unit_kind(repo, base, change.unit) is None):
            raise LaunchRefused(f"{change.unit}: a destroy of a unit that {head[:12]} still has, or {base[:12]} "
                                "does not: refused")
        if change.action is Action.APPLY and not at_head:
            raise LaunchRefused(f"{change.unit}: an apply of a unit that {head[:12]} does not have: refused")
