"""Human-readable renderings: the change table of the CLI, and the markdown of PR comments and issues.

Each unit that changes resources or has output gets a collapsed section: the resources its plan changes (address
and action, from `show -json`), then its output. A comment never exceeds GitHub's 65,536 characters whatever the
number of units: outputs are shortened (keeping their tail, where Terraform's summary and errors are) and the
sections that do not fit are left to the Dagster run (failures come first), then rows are folded with a note.
Every text from the repository (unit paths, accounts, errors, warnings, messages, outputs) goes through
core.markdown: it renders as itself, never as HTML, markup, a link or a mention.
"""

from collections.abc import Sequence

from . import markdown as md
from .model import ChangeSet, Outcome, Status

GITHUB_COMMENT_LIMIT = 65536
RESOURCES_PER_UNIT = 50  # resource changes listed per unit; the rest are on the unit's asset in Dagster


def changes_table(change_set: ChangeSet) -> str:
    head = ["wave", "type", "unit", "account", "action", "depends on", "triggers"]
    rows = [[str(c.wave), c.type.value, c.unit or "-", c.account or "-", c.action.value,
             ", ".join(c.depends_on) or "-", ", ".join(c.triggers)] for c in change_set.changes]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    out = [f"{change_set.event.value}: {change_set.base[:12]}..{change_set.head[:12]}, "
           f"{len(change_set.changes)} change(s)"]
    if rows:
        out += [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for label, problems in (("warning", change_set.warnings), ("error", change_set.errors)):
        out += [f"{label}: {p}" for p in problems]
    return "\n".join(out)


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
    resources = outcome.summary.resources
    lines = [f"- {md.code(r.address)}: {md.text(r.action)}" for r in resources[:RESOURCES_PER_UNIT]]
    if len(resources) > RESOURCES_PER_UNIT:
        lines.append(f"- … and {len(resources) - RESOURCES_PER_UNIT} more (the unit's asset in Dagster lists them)")
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


def render_comment(*, title: str, head_sha: str, outcomes: list[Outcome], errors: Sequence[str] = (),
                   warnings: Sequence[str] = (), run_url: str | None = None, note: str | None = None,
                   limit: int = GITHUB_COMMENT_LIMIT, collapsible: bool = True) -> str:
    """The PR comment (or issue body) for one run; never longer than `limit` characters. `collapsible=False`:
    sections with bold titles instead of `<details>` (for Dagster's markdown, which drops raw HTML)."""
    status = overall_status(outcomes, list(errors))
    head = [f"### {status.icon} pipelines-dagster {md.text(title)}: {status.label}",
            f"Commit {md.code(head_sha[:12])} · {len(outcomes)} change(s)"
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
