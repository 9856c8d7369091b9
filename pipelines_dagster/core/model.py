"""The vocabulary shared by every part of the pipeline: changes, actions, statuses, results, plans; the typed
contracts that travel between the pipeline's steps (validated by pydantic when they are built)."""

import hashlib
import re
from enum import Enum

from pydantic import BaseModel, Field


class ChangeType(str, Enum):
    """Infrastructure change types (docs/ARCHITECTURE.md's contract). Declaration order is precedence for units."""

    MODULE_DELETED = "ModuleDeleted"
    MODULE_ADDED = "ModuleAdded"
    MODULE_CHANGED = "ModuleChanged"
    MODULE_SOURCE_CHANGED = "ModuleSourceChanged"
    ENVCOMMON_CHANGED = "EnvCommonChanged"
    HCL_CHANGED = "HCLChanged"
    ACCOUNT_ADDED = "AccountAdded"
    ACCOUNT_CHANGED = "AccountChanged"
    ACCOUNT_DELETED = "AccountDeleted"

    @property
    def precedence(self) -> int:
        """Where a unit hit by several triggers takes its type from: the lowest."""
        return _PRECEDENCE[self]


_PRECEDENCE = {t: i for i, t in enumerate(ChangeType)}


class Event(str, Enum):
    PULL_REQUEST = "pull_request"
    PUSH = "push"


class Action(str, Enum):
    PLAN = "plan"
    APPLY = "apply"
    PLAN_DESTROY = "plan-destroy"
    DESTROY = "destroy"
    VALIDATE = "validate"
    BASELINE = "baseline"

    @property
    def is_destroy(self) -> bool:
        return self in (Action.PLAN_DESTROY, Action.DESTROY)

    @property
    def runs_terraform(self) -> bool:
        return self in (Action.PLAN, Action.APPLY, Action.PLAN_DESTROY, Action.DESTROY)


_ACTIONS = {
    ChangeType.MODULE_DELETED: (Action.PLAN_DESTROY, Action.DESTROY),
    ChangeType.ACCOUNT_ADDED: (Action.VALIDATE, Action.BASELINE),
    ChangeType.ACCOUNT_CHANGED: (Action.VALIDATE, Action.VALIDATE),
    ChangeType.ACCOUNT_DELETED: (Action.VALIDATE, Action.VALIDATE),
}


def action_for(change_type: ChangeType, event: Event) -> Action:
    """The contract's table: what a change type does on a pull request and on a push."""
    on_pr, on_push = _ACTIONS.get(change_type, (Action.PLAN, Action.APPLY))
    return on_pr if event is Event.PULL_REQUEST else on_push


class UnitKind(str, Enum):
    TERRAGRUNT = "terragrunt"
    TERRAFORM = "terraform"


class Status(str, Enum):
    """The one vocabulary for where a change stands, from the executor to the report."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    NO_CHANGES = "no_changes"
    VALIDATED = "validated"
    FAILED = "failed"
    STATE_LOCKED = "state_locked"
    TIMED_OUT = "timed_out"
    TOOL_MISSING = "tool_missing"
    SKIPPED = "skipped"  # not run: a change it depends on did not succeed, or the run was blocked
    REFUSED = "refused"  # not run: the unit was already applied at a later commit

    @property
    def ok(self) -> bool:
        return self in (Status.SUCCEEDED, Status.NO_CHANGES, Status.VALIDATED)

    @property
    def failed(self) -> bool:
        """The change did not do what it should have: its step fails, a push's report opens an issue. A refused
        apply counts (what was merged was not applied)."""
        return self in (Status.FAILED, Status.STATE_LOCKED, Status.TIMED_OUT, Status.TOOL_MISSING, Status.REFUSED)

    @property
    def icon(self) -> str:
        return _ICONS[self]

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


_ICONS = {Status.PENDING: "⏳", Status.SUCCEEDED: "✅", Status.NO_CHANGES: "➖", Status.VALIDATED: "✅",
          Status.FAILED: "❌", Status.STATE_LOCKED: "🔒", Status.TIMED_OUT: "⏱️", Status.TOOL_MISSING: "🧰",
          Status.SKIPPED: "⏭️", Status.REFUSED: "⛔"}


class InfraChange(BaseModel):
    """One infrastructure change: a unit (or an account entry), its type, action, triggers and order."""

    type: ChangeType
    unit: str | None
    account: str | None
    action: Action
    triggers: list[str] = Field(default_factory=list)
    wave: int = 0
    depends_on: list[str] = Field(default_factory=list)
    kind: UnitKind | None = None

    @property
    def name(self) -> str:
        """What the change is about, for people: the unit path, or `account <name>`."""
        return self.unit if self.unit is not None else f"account {self.account}"

    @property
    def key(self) -> str:
        """A stable, readable Dagster mapping key: the unit path's letters, digits and `_`, and a short hash
        that keeps changes apart ([A-Za-z0-9_], never a Python keyword)."""
        digest = hashlib.sha1(f"{self.type.value}:{self.name}".encode()).hexdigest()[:6]
        return re.sub(r"[^A-Za-z0-9_]+", "_", self.name).strip("_")[-60:].lstrip("_") + "_" + digest

    def to_dict(self) -> dict:
        """The contract's JSON (`pipelines-dagster changes`)."""
        return self.model_dump(mode="json", exclude={"kind"})


class ResourceChange(BaseModel):
    """One resource (or output) a plan changes: its address and what happens to it."""

    address: str
    action: str  # create, update, delete, replace, ...
    actions: list[str]
    reason: str = ""  # why Terraform chose it, when it says: "forces replacement: triggers", "tainted", ...


class PlanSummary(BaseModel):
    add: int = 0
    change: int = 0
    destroy: int = 0
    resources: list[ResourceChange] = Field(default_factory=list)
    outputs: list[ResourceChange] = Field(default_factory=list)  # address: the output's name

    @property
    def has_changes(self) -> bool:
        return bool(self.resources or self.outputs)

    def line(self) -> str:
        """The one way a plan summary is written, everywhere."""
        text = f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"
        if self.outputs:
            text += f", {len(self.outputs)} output change{'s' if len(self.outputs) != 1 else ''}"
        return text

    def to_dict(self) -> dict:
        return {"add": self.add, "change": self.change, "destroy": self.destroy,
                "resources": [r.model_dump() for r in self.resources],
                "outputs": [{"name": o.address, "action": o.action, "actions": o.actions} for o in self.outputs]}

    @classmethod
    def from_plan_json(cls, plan: dict) -> "PlanSummary":
        """Counts as Terraform prints them: a replacement is one add and one destroy; reads are not changes."""
        summary = cls()
        for rc in plan.get("resource_changes") or []:
            actions = list((rc.get("change") or {}).get("actions") or [])
            if not actions or actions in (["no-op"], ["read"]):
                continue
            summary.add += "create" in actions
            summary.destroy += "delete" in actions
            summary.change += "update" in actions
            summary.resources.append(ResourceChange(address=str(rc.get("address")), action=_action_label(actions),
                                                    actions=actions, reason=_reason(rc)))
        for name, oc in sorted((plan.get("output_changes") or {}).items()):
            actions = list((oc or {}).get("actions") or [])
            if actions and actions != ["no-op"]:
                summary.outputs.append(ResourceChange(address=name, action=_action_label(actions), actions=actions))
        return summary


_REASONS = {"replace_because_tainted": "tainted", "replace_by_request": "replacement requested (-replace)",
            "replace_by_triggers": "replace_triggered_by", "delete_because_no_resource_config": "no longer in the code",
            "delete_because_no_module": "its module is gone", "delete_because_count_index": "count shrank",
            "delete_because_each_key": "for_each key gone", "delete_because_wrong_repetition": "count/for_each changed"}


def _reason(rc: dict) -> str:
    """Terraform's reason for a resource change (`action_reason`, with `replace_paths` for a replacement the code
    forces), as people read it."""
    why = str(rc.get("action_reason") or "")
    if why == "replace_because_cannot_update":
        paths = [".".join(str(p) for p in path) for path in (rc.get("change") or {}).get("replace_paths") or []]
        return "forces replacement" + (f": {', '.join(paths)}" if paths else "")
    return _REASONS.get(why, why.replace("_", " "))


def _action_label(actions: list[str]) -> str:
    if "create" in actions and "delete" in actions:
        return "replace"
    return actions[0] if len(actions) == 1 else "+".join(actions)


class LockInfo(BaseModel):
    id: str | None = None
    who: str | None = None
    operation: str | None = None
    created: str | None = None
    path: str | None = None
    stale: str | None = None  # why its holder is gone; None when it may still be working

    def to_dict(self) -> dict:
        return self.model_dump()


class Result(BaseModel):
    """What running one unit's action did (the `execute` command's JSON)."""

    status: Status
    unit: str | None = None
    action: str | None = None
    engine: str | None = None
    commit: str | None = None
    summary: PlanSummary = Field(default_factory=PlanSummary)
    duration_s: float = 0.0
    # of the failing command, else of the last one (the plan's with detailed_exitcode); None when nothing ran
    exit_code: int | None = None
    output: str = ""  # redacted, capped
    message: str = ""  # redacted
    lock: LockInfo | None = None
    account: str | None = None
    role_arn: str | None = None
    transient: bool = False  # failed for a reason that may clear (a state lock, STS throttling): worth a retry

    @property
    def ok(self) -> bool:
        return self.status.ok

    def to_dict(self) -> dict:
        data = {
            "status": self.status.value,
            "unit": self.unit,
            "action": self.action,
            "engine": self.engine,
            "commit": self.commit,
            "account": self.account,
            "role_arn": self.role_arn,
            "summary": self.summary.to_dict(),
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "message": self.message,
            "output": self.output,
        }
        if self.lock is not None:
            data["lock"] = self.lock.to_dict()
        if self.transient:
            data["transient"] = True
        return data


class Outcome(Result):
    """A change of a run and what happened to it (with its wall-clock start and end)."""

    change: InfraChange
    started_at: float | None = None
    finished_at: float | None = None
    pull_request: int | None = None  # the baseline pull request an AccountAdded opened

    @classmethod
    def of(cls, change: InfraChange, result: Result, **fields) -> "Outcome":
        return cls(change=change, **{**result.model_dump(exclude={"unit", "action"}), "summary": result.summary,
                                     "unit": change.unit, "action": change.action.value, **fields})

    @classmethod
    def note(cls, change: InfraChange, status: Status, message: str = "", **fields) -> "Outcome":
        """An outcome that ran nothing (skipped, refused, validated, pending) or failed before running."""
        return cls(change=change, status=status, message=message, unit=change.unit, action=change.action.value,
                   account=fields.pop("account", change.account), **fields)


class RunSpec(BaseModel):
    """What one pipeline run is about."""

    event: Event
    base: str  # full shas
    head: str
    pr: int | None = None


class Plan(BaseModel):
    """A run's changes and what the repository says about them, as orchestrate decided them."""

    spec: RunSpec
    changes: list[InfraChange] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    notices: list[str] = Field(default_factory=list)
    blocked: str | None = None  # why nothing runs
    pull_request: int | None = None  # the run's pull request, or for a push the merged one (found on GitHub)
    replaced_tip: str | None = None  # a push after a rewrite of the deploy branch: the tip it no longer has
    subject: str | None = None  # what the run is of, for people: "pull request #3", "branch x", "main"

    def rewrite_message(self) -> str | None:
        """What a push after a rewrite of the deploy branch must say (and fail for)."""
        if not self.replaced_tip:
            return None
        return (f"the deploy branch was rewritten: {self.replaced_tip[:12]} is no longer in its history, which now "
                f"ends at {self.spec.head[:12]}. This run applies only what changed from {self.spec.base[:12]}, "
                "where the two histories part; nothing of the commits the branch no longer has is applied, and what "
                "they applied is not undone: check the units they changed (their drift checks) and apply them from "
                "their assets (Materialize) if needed")


class Problem(BaseModel):
    """An error or warning about the repository, naming the file (and line when known)."""

    file: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<repository>"
        if self.line:
            where += f":{self.line}"
        return f"{where}: {self.message}"


class ChangeSet(BaseModel):
    """What changed between two commits: the changes, and what the repository says about them."""

    base: str
    head: str
    event: Event
    changes: list[InfraChange] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    errors: list[Problem] = Field(default_factory=list)
    notices: list[str] = Field(default_factory=list)  # for the people reviewing the change (shown as warnings)

    def to_dict(self) -> dict:
        """The contract's JSON (`pipelines-dagster changes`)."""
        return {
            "base": self.base,
            "head": self.head,
            "event": self.event.value,
            "changes": [c.to_dict() for c in self.changes],
            "warnings": self.notices + [str(w) for w in self.warnings],
            "errors": [str(e) for e in self.errors],
        }
