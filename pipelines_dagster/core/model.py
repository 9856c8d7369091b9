"""The vocabulary shared by every part of the pipeline: changes, actions, units, accounts."""

from dataclasses import dataclass, field
from enum import Enum


class ChangeType(str, Enum):
    """Infrastructure change types (DESIGN.md contract). Declaration order is precedence for units."""

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


@dataclass(frozen=True)
class Unit:
    """A deployable folder: a Terragrunt unit or a plain Terraform root module."""

    path: str  # repo-relative, forward slashes, no trailing slash
    kind: UnitKind
    account: str | None = None


@dataclass
class InfraChange:
    type: ChangeType
    unit: str | None
    account: str | None
    action: Action
    triggers: list[str] = field(default_factory=list)
    wave: int = 0
    depends_on: list[str] = field(default_factory=list)
    kind: UnitKind | None = None

    def to_dict(self) -> dict:
        return {
            "type": self.type.value,
            "unit": self.unit,
            "account": self.account,
            "action": self.action.value,
            "triggers": list(self.triggers),
            "wave": self.wave,
            "depends_on": list(self.depends_on),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "InfraChange":
        return cls(
            type=ChangeType(data["type"]),
            unit=data["unit"],
            account=data["account"],
            action=Action(data["action"]),
            triggers=list(data.get("triggers", [])),
            wave=int(data.get("wave", 0)),
            depends_on=list(data.get("depends_on", [])),
            kind=UnitKind(data["kind"]) if data.get("kind") else None,
        )


@dataclass
class Problem:
    """An error or warning about the repository, naming the file (and line when known)."""

    file: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<repository>"
        if self.line:
            where += f":{self.line}"
        return f"{where}: {self.message}"


@dataclass
class ChangeSet:
    base: str
    head: str
    event: Event
    changes: list[InfraChange] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # for the people reviewing the change (shown as warnings)

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "head": self.head,
            "event": self.event.value,
            "changes": [c.to_dict() for c in self.changes],
            "warnings": self.notices + [str(w) for w in self.warnings],
            "errors": [str(e) for e in self.errors],
        }
