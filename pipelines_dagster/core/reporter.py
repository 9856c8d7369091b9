"""What a run says, when: "detecting changes", the list of changes, the result (its pull request's comment, one per
head commit, updated in place; the commit status; an issue when an apply or destroy on the deploy branch fails, or
when the deploy branch was rewritten). The bodies are core.render's; the writes core.github_updater's. Without
GitHub (local mode) the report is returned for Dagster."""

from .github_updater import Updater, comment_key
from .model import Event, Outcome, Plan, RunSpec, Status
from .render import failure_issue_title, rewrite_issue_title, run_report


def title_for(event: Event) -> str:
    return "apply" if event is Event.PUSH else "plan"


def failed_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status.failed]


def run_failed(plan: Plan, outcomes: list[Outcome]) -> bool:
    return bool(plan.errors) or bool(failed_outcomes(outcomes)) or plan.replaced_tip is not None


class Reporter:
    """Reports one run on its pull request: the run's own, or for a push the merged one (`pull_request`)."""

    def __init__(self, updater: Updater, spec: RunSpec, run_url: str | None, pull_request: int | None = None):
        self.updater, self.spec, self.run_url = updater, spec, run_url
        self.pull_request = pull_request if pull_request is not None else spec.pr
        self._comment_id: int | None = None

    def _body(self, plan: Plan | None, outcomes: list[Outcome], note: str | None = None) -> str:
        return run_report(title=title_for(self.spec.event), head_sha=self.spec.head, outcomes=outcomes,
                          errors=plan.errors if plan else [], warnings=plan.warnings if plan else [],
                          run_url=self.run_url, note=note, limit=self.updater.budget(comment_key(self.spec.head)),
                          collapsible=not self.updater.local, subject=plan.subject if plan else None)

    def _comment(self, body: str) -> None:
        if self.pull_request is None:
            return
        written = self.updater.comment(self.pull_request, body, comment_key(self.spec.head), self._comment_id)
        if written is not None:
            self._comment_id = written.id

    # -- the run's moments

    def started(self) -> None:
        self.updater.status(self.spec.head, "pending", "detecting changes", self.run_url)

    def detecting(self) -> None:
        self._comment(self._body(None, [], note="⏳ Detecting changes…"))

    def planned(self, plan: Plan) -> None:
        pending = [Outcome.note(c, Status.PENDING) for c in plan.changes]
        self._comment(self._body(plan, pending, note=_note(plan)))

    def finished(self, plan: Plan, outcomes: list[Outcome]) -> str:
        """Final comment, status and issues; returns the markdown report."""
        body = self._body(plan, outcomes, note=_note(plan))
        self._comment(body)
        bad = failed_outcomes(outcomes)
        description = (f"{len(bad)} of {len(outcomes)} change(s) failed" if bad else
                       "repository errors" if plan.errors else
                       "the deploy branch was rewritten" if plan.replaced_tip else f"{len(outcomes)} change(s) ok")
        self.updater.status(self.spec.head, "failure" if run_failed(plan, outcomes) else "success", description,
                            self.run_url)
        if self.spec.event is Event.PUSH and bad:
            self.updater.issue(f"apply-failed={self.spec.head}",
                               failure_issue_title(self.spec.head, [o.change.name for o in bad]), body)
        if plan.replaced_tip:
            self.updater.issue(f"rewritten={plan.replaced_tip}", rewrite_issue_title(plan), body)
        return body


def _note(plan: Plan) -> str | None:
    """What the reader must know before the table: why nothing ran, a rewritten deploy branch, that configuration
    edits wait for merge."""
    rewrite = plan.rewrite_message()
    lines = ([f"⛔ {plan.blocked}"] if plan.blocked else []) + ([f"⚠️ {rewrite[0].upper()}{rewrite[1:]}."]
                                                              if rewrite else []) + [f"ℹ️ {n}" for n in plan.notices]
    return "\n\n".join(lines) or None


def summary_counts(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status.value] = counts.get(o.status.value, 0) + 1
    return counts
