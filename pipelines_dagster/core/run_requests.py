"""What the sensors decide, without Dagster: which pull requests, branches and deploy-branch commits need a run,
what each run is given, how the sensors' cursors look, and what is written when a run crashes.

Cursors are JSON objects (small, readable in the UI):
- pull requests / branches: ``{"prs": {"<number>": "<head sha>"}, "branches": {"<name>": "<head sha>"}}``: the head
  last handled for each open pull request (GitHub mode) or branch (local mode); closed ones drop out;
- deploy branch: ``{"branch": "<name>", "sha": "<last commit handed to a run>"}``.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..redact import without_url_credentials
from .model import Event

TAG_PR = "pipelines/pr"
TAG_SHA = "pipelines/sha"
TAG_EVENT = "pipelines/event"
TAG_BRANCH = "pipelines/branch"
TAG_BASE_BRANCH = "pipelines/base-branch"
TAG_APPLY_LOCK = "pipelines/apply-lock"
TAG_REPLACED_TIP = "pipelines/replaced-tip"  # a push run after a rewrite of the deploy branch: the old tip
TAG_ACCOUNT_PREFIX = "pipelines/account-"  # one tag per account a run touches: pipelines/account-<name> = true


@dataclass(frozen=True)
class RunWanted:
    """One run of the job, as a sensor asks for it."""

    run_key: str
    event: str
    base_ref: str
    head_ref: str
    pr_number: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def run_config(self) -> dict:
        """The run config of the plan job (a pull request's, a branch's) or the apply job (a push's)."""
        config: dict[str, str | int | None] = {"base_ref": self.base_ref, "head_ref": self.head_ref}
        if self.event == Event.PULL_REQUEST.value:
            config["pr_number"] = self.pr_number
        return {"ops": {"orchestrate": {"config": config}}}


def load_cursor(text: str | None) -> dict:
    """A cursor's state; an empty or unreadable cursor is an empty state."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def dump_cursor(state: dict) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def repo_identity(name: str) -> str:
    """A tag value naming a repository (owner/name or URL): at most 63 of [A-Za-z0-9_.-], stable, unique, and the
    same with or without credentials in the URL (which it never shows)."""
    name = without_url_credentials(name.strip())
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rstrip("/")).strip("_") or "repo"
    if len(clean) <= 63:
        return clean
    return f"{clean[-50:].lstrip('_.-')}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def account_tag(name: str) -> str:
    """The run tag key naming an account the run touches. One key per account (value `true`), so that the Runs
    page filters the runs of any one account, whatever else they touched."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "account"
    room = 63 - len("account-")
    if len(clean) > room:
        clean = f"{clean[:room - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return TAG_ACCOUNT_PREFIX + clean


def run_tags(event: str, head: str, pr: int | None = None, accounts: Iterable[str | None] = ()) -> dict[str, str]:
    """The tags the Runs page filters on: the event, the commit, the pull request, the accounts."""
    tags = {TAG_EVENT: event, TAG_SHA: head}
    if pr is not None:
        tags[TAG_PR] = str(pr)
    tags.update({account_tag(a): "true" for a in accounts if a})
    return tags


# ---------------------------------------------------------------------------------------------- pull requests


def pull_request_run(pr, base_ref: str) -> RunWanted:
    """The plan run for a pull request's head (`pr` an integrations.github.PullRequestInfo). `base_ref` is what
    the diff starts from: the merge base of head and base branch when known, else the base branch."""
    return RunWanted(run_key=f"pr-{pr.number}-{pr.head_sha}", event=Event.PULL_REQUEST.value, base_ref=base_ref,
                     head_ref=pr.head_sha, pr_number=pr.number,
                     tags={TAG_PR: str(pr.number), TAG_SHA: pr.head_sha, TAG_EVENT: Event.PULL_REQUEST.value,
                           TAG_BASE_BRANCH: pr.base_ref})


def new_heads(current: Mapping[str, str], seen: Mapping[str, str]) -> list[str]:
    """Keys (pull request numbers or branch names) whose head differs from the one last handled, in order."""
    return [key for key, sha in current.items() if seen.get(key) != sha]


# ---------------------------------------------------------------------------------------------- local mode


def branch_run(name: str, sha: str, base_ref: str, deploy_branch: str) -> RunWanted:
    """The plan run for a branch of a plain git remote (local mode: every branch is a change request)."""
    return RunWanted(run_key=f"branch-{name}-{sha}", event=Event.PULL_REQUEST.value, base_ref=base_ref, head_ref=sha,
                     tags={TAG_BRANCH: name[:200], TAG_SHA: sha, TAG_EVENT: Event.PULL_REQUEST.value,
                           TAG_BASE_BRANCH: deploy_branch})


# ---------------------------------------------------------------------------------------------- deploy branch


def push_runs(previous: str, commits: Iterable[str], lock: str, replaced: str | None = None) -> list[RunWanted]:
    """One apply run per new deploy-branch commit, oldest first, each starting where the previous one ended.
    `replaced`: the tip a rewrite of the branch replaced (`previous` is then where the two histories part); the
    runs carry it so that the rewrite is reported."""
    runs, base = [], previous
    for sha in commits:
        tags = {TAG_SHA: sha, TAG_EVENT: Event.PUSH.value, TAG_APPLY_LOCK: lock}
        if replaced:
            tags[TAG_REPLACED_TIP] = replaced
        runs.append(RunWanted(run_key=f"push-{sha}", event=Event.PUSH.value, base_ref=base, head_ref=sha,
                              tags=tags))
        base = sha
    return runs


# ---------------------------------------------------------------------------------------------- crashed runs


@dataclass(frozen=True)
class CrashTarget:
    event: str | None
    pr: int | None
    sha: str | None


def crash_target(event: str | None, tags: Mapping[str, str], run_config: Mapping | None) -> CrashTarget:
    """What a failed run of `event`'s job was about: from the sensors' tags, else from its run config (runs
    launched by hand)."""
    config = ((run_config or {}).get("ops") or {}).get("orchestrate", {}).get("config") or {}
    raw_pr = tags.get(TAG_PR) or config.get("pr_number")
    pr: int | None
    try:
        pr = int(raw_pr) if raw_pr is not None and raw_pr != "" else None
    except (TypeError, ValueError):
        pr = None
    sha = tags.get(TAG_SHA) or config.get("head_ref")
    return CrashTarget(event=event, pr=pr, sha=sha)


def already_reported(failures_reported: Iterable[bool]) -> bool:
    """A run whose every failure was the deliberate one after a complete report has nothing left to report."""
    flags = list(failures_reported)
    return bool(flags) and all(flags)


