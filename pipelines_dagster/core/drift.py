"""Drift detection: every unit planned at the deploy-branch head with the plan role and `-detailed-exitcode`.

A unit is clean when its plan is empty, drifted when it is not (reality differs from the code: a change made
behind Terraform's back, or one never applied), and unchecked when the plan could not run. The findings feed one
asset check per unit, and one GitHub issue listing what is drifted or unchecked, rewritten only when that list
changes (a fingerprint in its body), closed when every unit is clean.
"""

import fnmatch
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, Field

from .executor import CommitExecutor, ExecuteRequest
from .model import Action, Event, PlanSummary, ResourceChange, Result, Status

ISSUE_KEY = "drift"
CLEAN, DRIFTED, UNCHECKED, GONE = "clean", "drifted", "unchecked", "gone"
RESOURCES_LISTED = 20  # per unit, in metadata and in the issue


class Finding(BaseModel):
    """A unit's drift check: its state, and for a drifted unit the plan's counts and resource changes."""

    unit: str
    state: str  # CLEAN, DRIFTED, UNCHECKED or GONE
    account: str | None = None
    commit: str | None = None
    summary: PlanSummary = Field(default_factory=PlanSummary)  # the counts only
    resources: list[ResourceChange] = Field(default_factory=list)  # outputs as `output.<name>`
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.state in (CLEAN, GONE)

    def to_metadata(self) -> dict:
        """Plain values for the asset check's metadata (read back by `from_metadata`, with the resource changes
        as rows of address and action)."""
        data: dict[str, str | int] = {"state": self.state, "account": self.account or "", "commit": self.commit or ""}
        if self.state == DRIFTED:
            data.update(plan=self.summary.line(), add=self.summary.add, change=self.summary.change,
                        destroy=self.summary.destroy)
        if self.message:
            data["message"] = self.message
        return data

    @classmethod
    def from_metadata(cls, unit: str, metadata: Mapping, rows: Sequence[Mapping]) -> "Finding":
        return cls(unit=unit, state=str(metadata.get("state", UNCHECKED)), account=metadata.get("account") or None,
                   commit=metadata.get("commit") or None,
                   summary=PlanSummary(**{k: int(metadata.get(k, 0)) for k in ("add", "change", "destroy")}),
                   resources=[ResourceChange(address=str(r["address"]), action=str(r["action"]),
                                             actions=[str(r["action"])]) for r in rows],
                   message=str(metadata.get("message", "")))


def finding(unit: str, account: str | None, commit: str, result: Result) -> Finding:
    """A plan's result (run with detailed_exitcode) as a finding."""
    if result.status is Status.NO_CHANGES and result.exit_code == 0:
        return Finding(unit=unit, state=CLEAN, account=account, commit=commit)
    if result.status is Status.SUCCEEDED:
        s = result.summary
        resources = s.resources[:RESOURCES_LISTED] + [
            o.model_copy(update={"address": f"output.{o.address}"}) for o in s.outputs][:RESOURCES_LISTED]
        return Finding(unit=unit, state=DRIFTED, account=account, commit=commit,
                       summary=PlanSummary(add=s.add, change=s.change, destroy=s.destroy),
                       resources=resources[:RESOURCES_LISTED], message=result.message)
    return Finding(unit=unit, state=UNCHECKED, account=account, commit=commit,
                   message=result.message or f"plan {result.status.value}")


def matches(unit: str, patterns: list[str]) -> bool:
    """Path filter: no patterns match everything; a pattern matches the unit or any folder above it."""
    return not patterns or any(fnmatch.fnmatchcase(unit, p.strip("/")) or
                               fnmatch.fnmatchcase(unit, p.strip("/") + "/*") for p in patterns)


def check_units(prepared: CommitExecutor, repo, commit: str, units: dict[str, str | None],
                max_parallel: int = 4) -> list[Finding]:
    """Plan every unit (path -> account) at `commit`; units no longer there are GONE. Never raises per unit."""
    from ..integrations.git_tree import list_folders

    if not units:
        return []
    present = {path.rsplit("/", 1)[0] if "/" in path else "" for path in list_folders(repo, commit, list(units))}

    def check(unit: str) -> Finding:
        account = units[unit]
        if unit not in present:
            return Finding(unit=unit, state=GONE, account=account, commit=commit,
                           message=f"no longer on the deploy branch at {commit[:12]}")
        try:
            # the plan role, as for a pull request: a drift check can never assume an apply role
            result = prepared.executor.execute(ExecuteRequest(unit=unit, action=Action.PLAN,
                                                              event=Event.PULL_REQUEST, head=commit))
        except Exception as exc:  # a bug or an unexpected tool failure: this unit is unchecked, the rest go on
            return Finding(unit=unit, state=UNCHECKED, account=account, commit=commit,
                           message=f"internal error: {type(exc).__name__}: {exc}")
        return finding(unit, result.account or account, commit, result)

    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        return list(pool.map(check, sorted(units)))


# ------------------------------------------------------------------------------------------------ the issue


def open_findings(findings: dict[str, Finding]) -> list[Finding]:
    """What the issue lists: drifted and unchecked units, in path order."""
    return [f for _, f in sorted(findings.items()) if not f.passed]


