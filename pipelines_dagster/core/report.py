"""Human-readable renderings of change sets and results."""

from .model import ChangeSet


def changes_table(change_set: ChangeSet) -> str:
    head = ["wave", "type", "unit", "account", "action", "depends on", "triggers"]
    rows = [[str(c.wave), c.type.value, c.unit or "-", c.account or "-", c.action.value,
             ", ".join(c.depends_on) or "-", ", ".join(c.triggers)] for c in change_set.changes]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()

    out = [f"{change_set.event.value}: {change_set.base[:12]}..{change_set.head[:12]}, "
           f"{len(change_set.changes)} change(s)"]
    if rows:
        out += [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for label, problems in (("warning", change_set.warnings), ("error", change_set.errors)):
        out += [f"{label}: {p}" for p in problems]
    return "\n".join(out)
