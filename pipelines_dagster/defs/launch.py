"""What a launcher may choose, and what it means: the plan and apply jobs' run configuration (intent only: a pull
request, a branch, a commit) turned into the run's base and head. Everything else comes from the deployment and the
deploy branch, and a push run is held to the deploy branch's own history (core.trust.push_range)."""

import re
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ..core import run_requests
from ..core.model import Event, RunSpec
from .resources import InfraRepo

if TYPE_CHECKING:
    from ..integrations.github_records import PullRequestInfo


class PlanConfig(dg.Config):
    pr_number: int | None = Field(None, description=(
        "The pull request. Alone it is enough: its head and base branch come from GitHub (in local mode its head "
        "is the remote's refs/pull/<number>/head, planned against the deploy branch). With head_ref it is the pull "
        "request the report goes to."))
    head_ref: str | None = Field(None, description=(
        "The change's last commit: a branch, tag, sha or revision. Alone: that branch against the deploy branch."))
    base_ref: str | None = Field(None, description=(
        "Where the change starts: a branch, tag, sha or revision. Default: the pull request's base branch (or the "
        "deploy branch). The diff starts at its merge base with the head, as GitHub's 'Files changed' does."))


class ApplyConfig(dg.Config):
    head_ref: str = Field(description=(
        "The deploy-branch commit to apply: a sha, the deploy branch's name (its tip) or a revision of it. Only "
        "commits the deploy branch itself was at are applied (not those of branches merged into it)."))
    base_ref: str | None = Field(None, description=(
        "Where the change starts, an earlier commit of the deploy branch. Default: the head's first parent (what "
        "the push of the head applied)."))


class LaunchError(ValueError):
    """The run config names no change that can run; the message says what to give instead."""


def plan_refs(config: PlanConfig, repo, client) -> "tuple[str | None, str, PullRequestInfo | None]":
    """(base, head, the pull request) as a plan's run config gives them, or looked up: a pull request's on GitHub
    (`client`; it must be readable, since whether it comes from a fork decides its credentials), or in local mode
    (`client` None) the remote's refs/pull/<number>/head. The base is None when not given."""
    from ..integrations.git import GitError, resolve
    from ..integrations.github import GitHubError

    number, head, base = config.pr_number, config.head_ref, config.base_ref
    if number is not None and number < 1:
        raise LaunchError(f"pr_number {number}: a pull request number is 1 or more")
    if head is None and number is None:
        raise LaunchError("nothing to run: give pr_number (a pull request), or head_ref (a branch or commit)")
    pr = None
    if number is not None and client is not None:
        try:
            pr = client.get_pull_request(number)
        except GitHubError as exc:
            raise LaunchError(f"pull request #{number}: {exc}") from None
    if client is not None:
        _github_plan_refs(number, head, base, pr)
        if pr is None:
            head = f"refs/heads/{head}"  # a branch of the repository, never a pull request's ref or a sha
    if head is None and pr is not None:
        head, base = pr.head_sha, base or pr.base_ref
    elif head is None:
        head = f"refs/pull/{number}/head"
        try:
            resolve(repo, head)
        except GitError:
            raise LaunchError(f"pull request #{number}: {head} is not in the repository (in local mode a pull "
                              "request's head is that ref of the remote, as GitHub serves it); give head_ref, the "
                              "branch to plan, instead") from None
    return base, head, pr


def _github_plan_refs(number: int | None, head: str | None, base: str | None, pr) -> None:
    """With GitHub, a plan writes a pull request's comment and a commit status that branch protection may require:
    only a pull request's own head and base, or a branch of the repository against the deploy branch, are
    planned (a fork's commit never is; a base chosen to hide changes is not)."""
    if pr is not None:
        if head not in (None, pr.head_sha) or base not in (None, pr.base_ref):
            raise LaunchError(f"pull request #{number} is planned at its own head {pr.head_sha[:12]} against its base "
                              f"branch {pr.base_ref}: give pr_number alone")
    elif base is not None or head is None or not re.fullmatch(r"[\w./-]+", head) or head.startswith("refs/") or \
            re.fullmatch(r"[0-9a-f]{7,40}", head):
        raise LaunchError("with GitHub a plan is of a pull request (pr_number alone) or of a branch of the "
                          "repository against the deploy branch (head_ref: the branch's name, no base_ref)")


def refs_named(pr_number: int | None, *names: str | None) -> list[str]:
    """The refs a run's config names, fetched before anything else: the pull request's head as GitHub serves it,
    and branch names (a sha or an expression is looked up after a fetch of everything)."""
    refs = [f"refs/pull/{pr_number}/head"] if pr_number else []
    return refs + [f"refs/heads/{n}" for n in names if n and re.fullmatch(r"[\w./-]+", n) and not re.fullmatch(
        r"[0-9a-f]{40}", n) and ".." not in n and not n.startswith(("refs/", "-"))]


def run_spec(config: PlanConfig | ApplyConfig, infra_repo: InfraRepo,
             client) -> "tuple[RunSpec, str, object, PullRequestInfo | None]":
    """The run's spec (full shas), the deploy branch, the git dir, and the pull request a plan was asked for.
    dg.Failure ("cannot start: ...") names what is wrong before anything runs."""
    from ..core.repo_files import ConfigError
    from ..core.trust import LaunchRefused, push_range
    from ..integrations.git import GitError, merge_base, resolve

    plan = isinstance(config, PlanConfig)
    pr_number = config.pr_number if isinstance(config, PlanConfig) else None
    try:
        repo, branch = infra_repo.fetch_for_run(refs_named(pr_number, config.head_ref, config.base_ref))
        pull = None
        if isinstance(config, PlanConfig):
            base_ref, head_ref, pull = plan_refs(config, repo, client)
        else:
            base_ref, head_ref = config.base_ref, config.head_ref

        def shas() -> tuple[str, str | None]:
            return resolve(repo, head_ref), resolve(repo, base_ref) if base_ref else None

        try:
            head, base = shas()
        except GitError:  # not fetched on its own (a tag, an expression, another base branch): fetch all, once
            infra_repo.git_dir(fetch=True)
            head, base = shas()
        if plan:  # a change request is what its branch adds since it forked off the base
            base = base or resolve(repo, f"refs/heads/{branch}")
            base = merge_base(repo, base, head) or base
        else:  # the deploy branch's own history only: what pushing it applied
            base, head = push_range(repo, branch, head, base, head_ref)
    except (GitError, ConfigError, LaunchRefused, ValueError) as exc:
        raise dg.Failure(description=f"cannot start: {exc}") from None
    event = Event.PULL_REQUEST if plan else Event.PUSH
    return RunSpec(event=event, base=base, head=head, pr=pr_number), branch, repo, pull


def replaced_tip(context: dg.OpExecutionContext, repo, branch: str) -> str | None:
    """The tip a rewrite of the deploy branch replaced, when this push follows one (the deploy-branch sensor's tag,
    believed only when that commit is indeed no longer on the branch)."""
    from ..integrations.git import branch_sha, has_commit, is_ancestor

    old = context.run.tags.get(run_requests.TAG_REPLACED_TIP)
    tip = branch_sha(repo, branch)
    if not old or tip is None or not has_commit(repo, old) or is_ancestor(repo, old, tip):
        return None
    return old
