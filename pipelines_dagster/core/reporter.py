"""Reporting a run: the PR comment (one per head sha, updated in place), the commit status, and an issue when an
apply or destroy on the deploy branch fails. Without GitHub (local mode) the markdown is returned for Dagster."""

import logging

from .model import Event, Outcome, Plan, RunSpec, Status
from .report import render_comment

log = logging.getLogger(__name__)
STATUS_CONTEXT = "pipelines-dagster"


def title_for(event: Event) -> str:
    return "apply" if event is Event.PUSH else "plan"


def failed_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status.failed]


def run_failed(plan: Plan, outcomes: list[Outcome]) -> bool:
    return bool(plan.errors) or bool(failed_outcomes(outcomes)) or plan.replaced_tip is not None


class Reporter:
    """Writes one run's report. `client` is an integrations.github.GitHubClient, or None in local mode."""

    def __init__(self, client, spec: RunSpec, run_url: str | None, pull_request: int | None = None):
        self.client, self.spec, self.run_url = client, spec, run_url
        self.problems: list[str] = []  # GitHub errors met while reporting
        self._pr: int | None = pull_request if pull_request is not None else spec.pr
        self._comment_id: int | None = None
        self.transient_problems = False  # a call failed in a way that may clear (5xx, rate limit, no answer)
        self._pr_looked_up = self._pr is not None

    # -- what to write

    def _body(self, plan: Plan | None, outcomes: list[Outcome], note: str | None = None) -> str:
        from ..integrations.github import body_budget, comment_key

        limit = body_budget(comment_key(self.spec.head))
        return render_comment(title=title_for(self.spec.event), head_sha=self.spec.head, outcomes=outcomes,
                              errors=plan.errors if plan else [], warnings=plan.warnings if plan else [],
                              run_url=self.run_url, note=note, limit=limit, collapsible=self.client is not None)

    # -- GitHub calls, each one guarded: reporting problems never stop the run

    def _guard(self, what: str, fn):
        if self.client is None:
            return None
        from ..integrations.github import GitHubError

        try:
            return fn()
        except GitHubError as exc:
            message = f"{what}: {exc}"
            log.warning("GitHub: %s", message)
            self.problems.append(message)
            self.transient_problems |= exc.transient
            return None

    def pull_request(self) -> int | None:
        """The PR to comment on: the run's own, or for a push the merged PR the commit came from."""
        if not self._pr_looked_up and self.client is not None and self.spec.event is Event.PUSH:
            self._pr_looked_up = True
            prs = self._guard("finding the pull request of the commit",
                              lambda: self.client.pull_requests_for_commit(self.spec.head)) or []
            self._pr = prs[0].number if prs else None
        return self._pr

    def _comment(self, body: str) -> None:
        number = self.pull_request()
        if number is None or self.client is None:
            return
        from ..integrations.github import comment_key

        info = self._guard("updating the pull request comment",
                           lambda: self.client.upsert_comment(number, body, key=comment_key(self.spec.head),
                                                              comment_id=self._comment_id))
        if info is not None:
            self._comment_id = info.id

    def _status(self, state: str, description: str) -> None:
        self._guard("setting the commit status",
                    lambda: self.client.set_status(self.spec.head, state, context=STATUS_CONTEXT,
                                                   description=description, target_url=self.run_url))

    # -- the run's moments

    def started(self, comment: bool = True) -> None:
        self._status("pending", "detecting changes")
        if comment:
            self.detecting()

    def detecting(self) -> None:
        self._comment(self._body(None, [], note="⏳ Detecting changes…"))

    def planned(self, plan: Plan) -> None:
        pending = [Outcome.note(c, Status.PENDING) for c in plan.changes]
        self._comment(self._body(plan, pending, note=_note(plan)))

    def finished(self, plan: Plan, outcomes: list[Outcome]) -> str:
        """Final comment, status and (push with failures) issue; returns the markdown report."""
        failed = run_failed(plan, outcomes)
        body = self._body(plan, outcomes, note=_note(plan))
        self._comment(body)
        bad = failed_outcomes(outcomes)
        description = (f"{len(bad)} of {len(outcomes)} change(s) failed" if bad else
                       "repository errors" if plan.errors else f"{len(outcomes)} change(s) ok")
        self._status("failure" if failed else "success", description)
        rewrite = plan.rewrite_message()
        if rewrite:
            assert plan.replaced_tip is not None
            title = (f"pipelines-dagster: the deploy branch was rewritten from {plan.replaced_tip[:12]} to "
                     f"{self.spec.head[:12]}")
            self._guard("opening the rewrite issue", lambda: self.client.upsert_issue(
                f"rewritten={plan.replaced_tip}", title, body))
        if self.spec.event is Event.PUSH and bad:
            units = ", ".join(o.change.name for o in bad)
            title = " ".join(f"pipelines-dagster: {title_for(Event.PUSH)} failed for {self.spec.head[:12]}: "
                             f"{units}".split())  # a title is one line of plain text (unit paths may hold newlines)
            if len(title) > 250:
                title = title[:247] + "..."
            self._guard("opening the failure issue", lambda: self.client.upsert_issue(
                f"apply-failed={self.spec.head}", title, body))
        return body


def _note(plan: Plan) -> str | None:
    """What the reader must know before the table: why nothing ran, that configuration edits wait for merge."""
    rewrite = plan.rewrite_message()
    lines = ([f"⛔ {plan.blocked}"] if plan.blocked else []) + ([f"⚠️ {rewrite[0].upper()}{rewrite[1:]}."]
                                                              if rewrite else []) + [f"ℹ️ {n}" for n in plan.notices]
    return "\n\n".join(lines) or None


def summary_counts(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status.value] = counts.get(o.status.value, 0) + 1
    return counts
