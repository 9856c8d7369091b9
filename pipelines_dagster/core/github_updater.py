"""Every write the pipeline makes on GitHub goes through one `Updater`: pull request comments, commit statuses,
issues. It writes what core.render renders, keeps each write idempotent (marker comments, one issue per subject)
and never lets a GitHub failure stop the caller: failures become `problems` (and `transient` says whether trying
again later may help). Without a client (local mode) it writes nothing.
"""

import logging
from collections.abc import Callable
from typing import TypeVar

from . import render
from .drift import Finding
from .run_requests import CrashTarget

log = logging.getLogger(__name__)
STATUS_CONTEXT = "pipelines-dagster"
DRIFT_ISSUE_KEY = "drift"
T = TypeVar("T")


def comment_key(sha: str) -> str:
    """The marker key of a head commit's pull request comment."""
    return f"sha={sha}"


class Updater:
    """Writes on GitHub for one run, sensor tick or check; `client` is an integrations.github.GitHubClient, or None
    in local mode."""

    def __init__(self, client) -> None:
        self.client = client
        self.problems: list[str] = []  # GitHub failures met, for the caller to show
        self.transient = False  # a call failed in a way that may clear (5xx, rate limit, no answer)

    @property
    def local(self) -> bool:
        return self.client is None

    def _guard(self, what: str, call: Callable[[], T]) -> T | None:
        if self.client is None:
            return None
        from ..integrations.github import GitHubError

        try:
            return call()
        except GitHubError as exc:
            message = f"{what}: {exc}"
            log.warning("GitHub: %s", message)
            self.problems.append(message)
            self.transient |= exc.transient
            return None

    @staticmethod
    def budget(key: str) -> int:
        """Characters a body marked with `key` may have."""
        from ..integrations.github import body_budget

        return body_budget(key)

    # -- the three kinds of write

    def comment(self, number: int, body: str, key: str, comment_id: int | None = None):
        """The one comment marked `key` on pull request `number`, created or updated (its CommentInfo)."""
        return self._guard(f"updating the comment on #{number}", lambda: self.client.upsert_comment(
            number, body, key=key, comment_id=comment_id))

    def status(self, sha: str, state: str, description: str, target_url: str | None) -> None:
        self._guard("setting the commit status", lambda: self.client.set_status(
            sha, state, context=STATUS_CONTEXT, description=description, target_url=target_url))

    def issue(self, key: str, title: str, body: str):
        """The one open issue marked `key`, opened or brought up to date (its IssueInfo)."""
        return self._guard(f"opening the issue {key}", lambda: self.client.upsert_issue(key, title, body))

    # -- what needs a lookup first

    def merged_pull_request(self, sha: str) -> int | None:
        """The pull request a deploy-branch commit came from, if GitHub knows one."""
        prs = self._guard("finding the pull request of the commit",
                          lambda: self.client.pull_requests_for_commit(sha)) or []
        return prs[0].number if prs else None

    def fork_comment(self, pr) -> bool:
        """Why a pull request from a fork gets no plan, once per head commit; whether it was written."""
        return self.comment(pr.number, render.fork_comment(pr), f"fork={pr.head_sha}") is not None

    def drift_issue(self, listed: list[Finding], *, deploy_branch: str, commit: str, run_url: str | None) -> str:
        """Keep the one drift issue in step with `listed`: open it when something is listed, rewrite it only when
        the list changed, close it when nothing is. Returns what was done."""
        if self.client is None:
            return "local mode: no drift issue"
        existing = self._guard("finding the drift issue", lambda: self.client.find_issue(DRIFT_ISSUE_KEY))
        if self.problems:
            return f"the drift issue could not be read: {self.problems[-1]}"
        if not listed:
            if existing is None:
                return "every unit is clean; no issue is open"
            closed = self._guard("closing the drift issue", lambda: self.client.close_issue(
                DRIFT_ISSUE_KEY, comment=render.drift_closing_comment(deploy_branch, commit, run_url)))
            return f"every unit is clean; closed #{closed.number}" if closed else "every unit is clean"
        if existing is not None and render.fingerprint_line(listed) in (existing.body or ""):
            return f"#{existing.number} already lists these {len(listed)} unit(s)"
        body = render.drift_issue_body(listed, deploy_branch=deploy_branch, commit=commit, run_url=run_url,
                                       limit=self.budget(DRIFT_ISSUE_KEY))
        issue = self.issue(DRIFT_ISSUE_KEY, render.drift_issue_title(listed), body)
        if issue is None:
            return f"the drift issue could not be written: {self.problems[-1]}"
        return f"{'opened' if issue.created else 'updated'} #{issue.number} ({len(listed)} unit(s))"

    def crash(self, target: CrashTarget, body: str, run_url: str | None) -> str:
        """A run that crashed before its report: an issue for a push, its pull request's comment (replacing the
        stale progress note) and an error status for a plan. Returns what was done."""
        if target.sha is None:
            return "names no commit: not reported on GitHub"
        if target.event == "push":
            issue = self.issue(f"run-crashed={target.sha}", render.crash_issue_title(target), body)
            return f"reported in issue #{issue.number}" if issue else "could not be reported"
        if target.pr is None:
            return "has no pull request to report to"
        # beside the plan's comment and status, never over them: a run's tags name its target, and whoever starts
        # a run sets its tags
        self.comment(target.pr, body, f"crash={target.sha}")
        self._guard("setting the commit status", lambda: self.client.set_status(
            target.sha, "error", context=f"{STATUS_CONTEXT}/crash", description="the pipeline run crashed",
            target_url=run_url))
        return f"reported on #{target.pr}" if not self.problems else "could not be reported"
