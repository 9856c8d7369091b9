"""Every body the pipeline writes to GitHub, as markdown: the run report (a pull request's comment, the failure
issue of a push), the crash report, the comment on a fork's pull request, the drift issue, and the titles of issues.
Pure functions of typed records; core.github_updater writes them.

Each unit that changes resources or has output gets a collapsed section: the resources its plan changes (address
and action, from `show -json`), then its output. A body never exceeds GitHub's 65,536 characters whatever the
number of units: outputs are shortened (keeping their tail, where Terraform's summary and errors are) and the
sections that do not fit are left to the Dagster run (failures come first), then rows are folded with a note.
Every text from the repository (unit paths, accounts, errors, warnings, messages, outputs) goes through
core.markdown: it renders as itself, never as HTML, markup, a link or a mention.
"""

import hashlib
import re
from collections.abc import Callable, Sequence

from . import markdown as md
from .drift import DRIFTED, UNCHECKED, Finding
from .model import Event, Outcome, Plan, Status
from .run_requests import CrashTarget

GITHUB_COMMENT_LIMIT = 65536
RESOURCES_PER_UNIT = 50  # resource changes listed per unit; the rest are on the unit's asset in Dagster


def overall_status(outcomes: list[Outcome], errors: list[str]) -> Status:
    if errors or any(o.status.failed for o in outcomes):
        return Status.FAILED
    if any(o.status is Status.PENDING for o in outcomes):
        return Status.PENDING
    return Status.SUCCEEDED


def _summary_text(outcome: Outcome) -> str:
    if outcome.status in (Status.PENDING, Status.SKIPPED, Status.REFUSED, Status.VALIDATED) or \
            outcome.change.unit is None or (outcome.status.failed and not outcome.summary.has_changes):
        return ""
    return outcome.summary.line()


def _cell(text) -> str:
    return md.text(text) if text else "-"


def _row(outcome: Outcome) -> str:
    change = outcome.change
    ran = outcome.status not in (Status.PENDING, Status.SKIPPED, Status.REFUSED)
    return "| " + " | ".join([
        f"{outcome.status.icon} {outcome.status.label}", change.type.value,
        md.code(change.unit, table=True) if change.unit is not None else "-", _cell(change.account),
        change.action.value, _summary_text(outcome) or "-",
        f"{outcome.duration_s:.0f}s" if ran else "-"]) + " |"


def _shorten(text: str, limit: int) -> str:
    """Keep the tail (Terraform's summary and errors), and say what was cut."""
    if len(text) <= limit:
        return text
    if limit < 200:
        return ""
    keep = limit - 80
    return f"... {len(text) - keep} characters cut; the run's logs have everything ...\n" + text[-keep:]


def _resource_list(outcome: Outcome) -> str:
    """The resources and outputs a plan changes, each with its action and, when Terraform says it, why."""
    resources = outcome.summary.resources
    lines = [f"- {md.code(r.address)}: {md.text(r.action)}" + (f" ({md.text(r.reason)})" if r.reason else "")
             for r in resources[:RESOURCES_PER_UNIT]]
    if len(resources) > RESOURCES_PER_UNIT:
        lines.append(f"- … and {len(resources) - RESOURCES_PER_UNIT} more (the unit's asset in Dagster lists them)")
    lines += [f"- {md.code('output.' + o.address)}: {md.text(o.action)}" for o in outcome.summary.outputs[:20]]
    return "\n".join(lines)


def _section(title: str, body: str, collapsible: bool) -> str:
    """A titled section: collapsed on GitHub (`<details>`); a bold title where raw HTML is not rendered (Dagster's
    markdown, which drops it)."""
    if collapsible:
        return md.details(md.html_text(title), body)
    return f"**{md.text(title)}**\n\n{body}\n"


def _details(outcome: Outcome, limit: int, collapsible: bool = True) -> str:
    """The unit's section: its resource changes, then its output (shortened to `limit`)."""
    text = outcome.output.strip()
    if outcome.message:
        text = f"{outcome.message}\n\n{text}" if text else outcome.message
    text = _shorten(text, limit)
    resources = _resource_list(outcome)
    if not text and not resources:
        return ""
    change = outcome.change
    title = f"{change.name}: {change.action.value}"
    count = len(outcome.summary.resources)
    if count:
        title += f", {count} resource change{'s' if count != 1 else ''}"
    return _section(title, "\n\n".join(part for part in (resources, md.block(text) if text else "") if part),
                    collapsible)


def _subject(subject: str) -> str:
    """What a run is of: its pull request linked as GitHub links `#N` (the pipeline's own words), anything else
    (a branch name) as text."""
    number = re.fullmatch(r"pull request #(\d+)", subject)
    return f"pull request #{number.group(1)}" if number else md.text(subject)


def unit_plan(outcome: Outcome, limit: int = 20_000) -> str:
    """One unit's plan as markdown of its own (Dagster shows each as an entry of the report step's metadata): its
    resource changes and outputs, then its output, shortened to `limit`."""
    return _details(outcome, limit, collapsible=False)


def run_report(*, title: str, head_sha: str, outcomes: list[Outcome], errors: Sequence[str] = (),
               warnings: Sequence[str] = (), run_url: str | None = None, note: str | None = None,
               limit: int = GITHUB_COMMENT_LIMIT, collapsible: bool = True, subject: str | None = None) -> str:
    """The PR comment (or issue body) for one run; never longer than `limit` characters. `subject`: what the run
    is of (a pull request, a branch, the deploy branch). `collapsible=False`: sections with bold titles instead of
    `<details>` (for Dagster's markdown, which drops raw HTML)."""
    status = overall_status(outcomes, list(errors))
    head = [f"### {status.icon} pipelines-dagster {md.text(title)}: {status.label}",
            (f"{_subject(subject)} · commit" if subject else "Commit") + f" {md.code(head_sha[:12])} · "
            f"{len(outcomes)} change(s)"
            + (f" · {md.link('Dagster run', run_url)}" if run_url else ""), ""]
    if note:
        head += [md.text(note), ""]
    problems = []
    if errors:
        problems += ["**Errors**", ""] + [f"- {_cell(e)}" for e in errors] + [""]
    if warnings:
        problems += [_section("Warnings", "\n".join(f"- {_cell(w)}" for w in warnings), collapsible)]
    table_head = ["| status | type | unit | account | action | plan | time |", "|---|---|---|---|---|---|---|"]
    rows = [_row(o) for o in outcomes]

    def assemble(rows_shown: list[str], folded: int, details: list[str]) -> str:
        parts = head + problems
        if rows_shown:
            parts += table_head + rows_shown
            if folded:
                parts.append(f"| … | {folded} more change(s) not shown: the comment would exceed GitHub's limit; "
                             "see the Dagster run | | | | | |")
            parts.append("")
        parts += details
        return "\n".join(parts)

    # 1. every row, and the units' sections (failures first) as many as fit, outputs shortened evenly to a
    # readable length; shorter when not even the first section fits
    room = limit - len(assemble(rows, 0, [])) - 200  # 200: the note on what was left out
    detailed = sorted((o for o in outcomes if o.output or o.message or o.summary.resources),
                      key=lambda o: not o.status.failed)
    if detailed and room > 0:
        per = max(room // len(detailed) - 120, 1500)
        while per >= 200:
            details, used = [], 0
            for o in detailed:
                section = _details(o, per, collapsible)
                if used + len(section) + 1 > room:
                    break
                details.append(section)
                used += len(section) + 1
            if details:
                omitted = len(detailed) - len(details)
                if omitted:
                    details.append(f"_{omitted} more output(s) are in the Dagster run's logs (resource changes: on "
                                   "the units' assets)._\n")
                return assemble(rows, 0, details)
            per = per * 3 // 4
    # 2. fold rows
    shown = len(rows)
    while shown >= 0:
        body = assemble(rows[:shown], len(rows) - shown, [])
        if len(body) <= limit:
            return body
        shown = shown * 9 // 10 if shown > 10 else shown - 1
    return body[:limit]


ERROR_TEXT_LIMIT = 4000


def fork_comment(pr) -> str:
    """Why a pull request from a fork gets no plan (`pr` an integrations.github.PullRequestInfo)."""
    source = md.text(pr.head_repo) if pr.head_repo else "a deleted repository"
    return (f"### ⛔ pipelines-dagster: no plan for this pull request\n\n"
            f"Commit {md.code(pr.head_sha[:12])} comes from a fork ({source}). Plans run the pull request's code with "
            "credentials for the infrastructure accounts, so pull requests from forks get no run and no "
            "credentials.\n\nTo get a plan, a maintainer can push this branch to the repository itself and open the "
            "pull request from there.")


def crash_report(*, run_id: str, run_url: str | None, target: CrashTarget, errors: list[tuple[str | None, str]],
                 redact: Callable[[str], str] | None = None) -> str:
    """Markdown for a run that failed outside the dispatcher (so its own report never came)."""
    what = "apply" if target.event == Event.PUSH.value else "plan"
    link = md.link(f"Dagster run {run_id[:8]}", run_url) if run_url else f"Dagster run {md.code(run_id)}"
    lines = [f"### 💥 pipelines-dagster {what}: the run crashed",
             (f"Commit {md.code(target.sha[:12])} · " if target.sha else "") + link, "",
             "The run stopped before it could report its results. The changes below were not (all) run; "
             "see the run's logs, then re-execute it from the Dagster UI.", ""]
    budget = ERROR_TEXT_LIMIT
    for step, text in errors or [("run", "the run failed without a step failure (see the run's logs)")]:
        text = redact(text) if redact else text
        if len(text) > budget:
            text = text[:max(budget, 200)] + "\n… (shortened)"
        budget = max(0, budget - len(text))
        lines += [f"**{md.text(step)}**", "", md.block(text.rstrip()), ""]
    return "\n".join(lines)


def crash_issue_title(target: CrashTarget) -> str:
    return f"pipelines-dagster: apply run crashed for {(target.sha or 'unknown commit')[:12]}"


def fingerprint(listed: list[Finding]) -> str:
    """Changes when the listed units, their states or their plan summaries change (not with messages)."""
    text = "\n".join(f"{f.unit}\t{f.state}\t{f.summary.line() if f.state == DRIFTED else ''}" for f in listed)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def fingerprint_line(listed: list[Finding]) -> str:
    return f"<!-- drift-fingerprint: {fingerprint(listed)} -->"


def drift_issue_title(listed: list[Finding]) -> str:
    drifted = sum(f.state == DRIFTED for f in listed)
    unchecked = len(listed) - drifted
    parts = ([f"{drifted} unit{'s' if drifted != 1 else ''} drifted"] if drifted else []) + \
        ([f"{unchecked} unit{'s' if unchecked != 1 else ''} could not be checked"] if unchecked else [])
    return "pipelines-dagster: drift: " + ", ".join(parts)


def _run_link(run_url: str | None) -> str:
    return f" {md.link('Dagster run', run_url)}" if run_url else ""


def drift_issue_body(listed: list[Finding], *, deploy_branch: str, commit: str, run_url: str | None,
               limit: int) -> str:
    """The issue's markdown, within `limit` characters: rows first, then per-unit resources while they fit."""
    drifted = [f for f in listed if f.state == DRIFTED]
    unchecked = [f for f in listed if f.state == UNCHECKED]
    head = [fingerprint_line(listed),
            f"Drift checks plan the units of {md.code(deploy_branch)} with the plan role (last change of this list: "
            f"{md.code(commit[:12])}). These units differ from the code (a change made outside the pipeline, or one "
            "never applied), or could not be planned. Fix the code or the infrastructure; this issue is updated "
            "when the list changes and closed when every unit is clean."
            + _run_link(run_url), ""]
    tables: list[str] = []
    if drifted:
        tables += [f"### Drifted ({len(drifted)})", "", "| unit | account | plan |", "|---|---|---|"]
        tables += [f"| {md.code(f.unit, table=True)} | {_cell(f.account)} | {f.summary.line()} |" for f in drifted]
        tables.append("")
    if unchecked:
        tables += [f"### Could not be checked ({len(unchecked)})", "", "| unit | account | error |", "|---|---|---|"]
        tables += [f"| {md.code(f.unit, table=True)} | {_cell(f.account)} | {_cell(f.message[:300])} |"
                   for f in unchecked]
        tables.append("")
    body = "\n".join(head + tables)
    if len(body) > limit:  # too many rows: keep what fits, and say how many were left out
        kept, size = [], len("\n".join(head)) + 200
        for line in tables:
            if size + len(line) + 1 > limit:
                break
            kept.append(line)
            size += len(line) + 1
        left = sum(1 for line in tables if line.startswith("| `")) - sum(1 for line in kept if line.startswith("| `"))
        return "\n".join(head + kept + ["", f"… and {left} more unit(s): see the drift checks in Dagster."])
    for f in drifted:
        resources = "\n".join(f"- {md.code(r.address)}: {md.text(r.action)}" for r in f.resources)
        details = "\n" + md.details(f"<code>{md.html_text(f.unit)}</code>: {f.summary.line()}", resources).rstrip("\n")
        if len(body) + len(details) > limit:
            break
        body += details
    return body


def failure_issue_title(head: str, units: Sequence[str]) -> str:
    """A failed push's issue: one line of plain text (unit paths may hold newlines), at most 250 characters."""
    title = " ".join(f"pipelines-dagster: apply failed for {head[:12]}: {', '.join(units)}".split())
    return title if len(title) <= 250 else title[:247] + "..."


def rewrite_issue_title(plan: Plan) -> str:
    assert plan.replaced_tip is not None, "a push after a rewrite of the deploy branch"
    return f"pipelines-dagster: the deploy branch was rewritten from {plan.replaced_tip[:12]} to {plan.spec.head[:12]}"


def drift_closing_comment(deploy_branch: str, commit: str, run_url: str | None) -> str:
    return f"Every unit is clean at {md.code(deploy_branch)} ({md.code(commit[:12])}): closing.{_run_link(run_url)}"
