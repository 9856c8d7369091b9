"""The dispatcher: a run's plan, the stages its changes run in, and each change run to an outcome.

A pull request's changes all run at once (plans change nothing, so their order does not matter). A push runs in
stages, one wave of dependency order each: the changes of a wave start when every change of the waves before
has ended, and a change whose dependency did not succeed is skipped. The job has a fixed number of stages
(a Dagster graph is fixed when the code loads): when a push has more waves than that, the last stage runs the
remaining waves in one step, wave by wave. Each change is one item (one Dagster step), except that last one.

Dispatching never raises for a failed change: a failed change is an outcome.
"""

import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from .executor import CommitExecutor, ExecuteRequest
from .graph import nearest_in, waves
from .lineage import Lineage
from .model import (
    Action,
    ChangeSet,
    ChangeType,
    Event,
    InfraChange,
    Outcome,
    Plan,
    ResourceChange,
    Result,
    RunSpec,
    Status,
    UnitKind,
)
from .repo_files import ConfigError, load_accounts

AppliedCommit = Callable[[str], str | None]
RESOURCES_LISTED = 500  # resource changes per unit in an asset event's metadata


@dataclass
class Baseline:
    """Where AccountAdded baselines go: the repository to push to, the deploy branch, GitHub (None: local mode),
    the token git pushes with."""

    location: str
    deploy_branch: str
    client: object | None = None
    push_token: str | None = field(default=None, repr=False)


class StepChanges(BaseModel):
    """What one dispatch step runs: one change, or (the last apply stage) the remaining waves in order."""

    changes: list[InfraChange]
    spec: RunSpec
    pull_request: int | None = None

    @property
    def key(self) -> str:
        first = self.changes[0].key
        return first if len(self.changes) == 1 else f"{first}_and_{len(self.changes) - 1}_more"


class Progress(BaseModel):
    """A run's plan and the outcomes so far (by change key): what travels from one stage to the next."""

    plan: Plan
    outcomes: dict[str, Outcome] = Field(default_factory=dict)
    stage: int = 0

    def record(self, outcomes: list[Outcome], stage: int | None = None) -> "Progress":
        return self.model_copy(update={"outcomes": {**self.outcomes, **{o.change.key: o for o in outcomes}},
                                       "stage": self.stage if stage is None else stage})

    def outcome_list(self) -> list[Outcome]:
        """Every change's outcome in plan order; a change that has none yet is pending."""
        return [self.outcomes.get(c.key) or Outcome.note(c, Status.PENDING) for c in self.plan.changes]

    def remaining(self) -> list[InfraChange]:
        return [c for c in self.plan.changes if c.key not in self.outcomes]


def make_plan(spec: RunSpec, change_set: ChangeSet, blocked: str | None = None,
              pull_request: int | None = None) -> Plan:
    """The run's plan: every change, the repository's errors and warnings. A push with errors applies nothing."""
    if blocked is None and change_set.errors and spec.event is Event.PUSH:
        blocked = "the repository has errors at this commit: nothing is applied until they are fixed"
    return Plan(spec=spec, changes=change_set.changes, errors=[str(e) for e in change_set.errors],
                warnings=[str(w) for w in change_set.warnings], notices=list(change_set.notices), blocked=blocked,
                pull_request=pull_request if pull_request is not None else spec.pr)


def start(plan: Plan, stages: int) -> tuple[Progress, list[StepChanges]]:
    """The run's first items: every change of a pull request, the first wave of a push."""
    progress = Progress(plan=plan)
    if plan.blocked:
        return progress.record([Outcome.note(c, Status.SKIPPED, plan.blocked) for c in plan.changes]), []
    if plan.spec.event is Event.PULL_REQUEST:
        return progress, [_step(plan, [c]) for c in plan.changes]
    return next_stage(progress, [], stage=0, last_stage=stages - 1)


def next_stage(progress: Progress, results: list[Outcome], *, stage: int,
               last_stage: int) -> tuple[Progress, list[StepChanges]]:
    """Record a stage's results; the items of the next wave that has something to run (its changes whose
    dependencies did not succeed are skipped), or at the last stage every remaining wave as one item. No items:
    the run is done."""
    progress = progress.record(results, stage)
    if progress.plan.spec.event is not Event.PUSH or progress.plan.blocked:
        return progress, []  # a pull request's changes all run in the first stage
    while True:
        remaining = progress.remaining()
        if not remaining:
            return progress, []
        waves = sorted({c.wave for c in remaining})
        if stage >= last_stage and len(waves) > 1:
            return progress, [_step(progress.plan, sorted(remaining, key=lambda c: c.wave))]
        todo, skipped = [], []
        for change in (c for c in remaining if c.wave == waves[0]):
            reason = skip_reason(progress, change)
            if reason:
                skipped.append(Outcome.note(change, Status.SKIPPED, reason))
            else:
                todo.append(change)
        progress = progress.record(skipped)
        if todo:
            return progress, [_step(progress.plan, [c]) for c in todo]


def _step(plan: Plan, changes: list[InfraChange]) -> StepChanges:
    return StepChanges(changes=changes, spec=plan.spec, pull_request=plan.pull_request)


def skip_reason(progress: Progress, change: InfraChange) -> str | None:
    """Why a push's change does not run: a change it depends on did not succeed. Plans always run."""
    if progress.plan.spec.event is not Event.PUSH:
        return None
    by_unit = {o.change.unit: o for o in progress.outcomes.values() if o.change.unit is not None}
    bad = [d for d in change.depends_on if d in by_unit and not by_unit[d].status.ok]
    if bad:
        return f"skipped: it depends on {', '.join(bad)}, which did not succeed"
    return None


def reconcile_changes(lineage: Lineage, units: Iterable[str]) -> tuple[StepChanges, list[str]]:
    """Applying `units` at the deploy-branch commit `lineage` was read at (materializing their assets): one step's
    changes, in waves as a push orders them (dependencies first, looking through units not chosen; accounts in
    deploy_order unless that contradicts a dependency). Also returns the units that are not on the deploy branch
    there."""
    assert lineage.commit is not None, "the lineage of a deploy-branch commit"
    nodes = {u.path: u for u in lineage.units}
    chosen = set(units) & set(nodes)
    depends_on = nearest_in(chosen, {path: set(u.depends_on) for path, u in nodes.items()})
    order: dict[str | None, int | None] = {a.name: a.deploy_order for a in lineage.accounts}
    tiers = {u: math.inf if (o := order.get(nodes[u].account)) is None else float(o) for u in chosen}
    wave_of, _ = waves(depends_on, tiers)
    # a reconcile has no triggering file: it applies the unit as the deploy branch has it
    changes = sorted((InfraChange(type=ChangeType.MODULE_CHANGED, unit=u, account=nodes[u].account,
                                  action=Action.APPLY, wave=wave_of[u], depends_on=sorted(depends_on[u]),
                                  kind=UnitKind(nodes[u].kind)) for u in chosen), key=lambda c: (c.wave, c.unit))
    spec = RunSpec(event=Event.PUSH, base=lineage.commit, head=lineage.commit)
    return StepChanges(changes=changes, spec=spec), sorted(set(units) - set(nodes))


def run_step(item: StepChanges, prepared: CommitExecutor | None, repo, max_parallel: int = 4,
             baseline: Baseline | None = None, applied_commit: AppliedCommit | None = None) -> list[Outcome]:
    """Run an item's changes in wave order, each wave's changes in parallel (bounded), skipping dependents of
    failures. `applied_commit(unit)`: the commit a unit was last applied (or destroyed) at, to refuse going
    backwards."""
    progress = Progress(plan=Plan(spec=item.spec, changes=item.changes))
    for wave in sorted({c.wave for c in item.changes}):
        todo = []
        for change in (c for c in item.changes if c.wave == wave):
            reason = skip_reason(progress, change)
            if reason:
                progress = progress.record([Outcome.note(change, Status.SKIPPED, reason)])
            else:
                todo.append(change)
        with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
            done = list(pool.map(lambda c: dispatch_change(c, item.spec, prepared, repo, baseline, applied_commit),
                                 todo))
        progress = progress.record(done)
    return [progress.outcomes[c.key] for c in item.changes]


def dispatch_change(change: InfraChange, spec: RunSpec, prepared: CommitExecutor | None, repo,
                    baseline: Baseline | None = None, applied_commit: AppliedCommit | None = None) -> Outcome:
    """One change to its outcome (with wall-clock start and end); never raises."""
    started = time.time()
    newer = newer_applied_commit(change, spec, repo, applied_commit)
    if newer:
        outcome = Outcome.note(change, Status.REFUSED, f"{change.unit} was already applied at {newer[:12]}, a later "
                                                       f"commit than {spec.head[:12]}; applying this commit would "
                                                       "take it back. Apply the deploy branch's head instead.")
    else:
        outcome = _dispatch(change, spec, prepared, repo, baseline)
    return outcome.model_copy(update={"started_at": started, "finished_at": time.time()})


def newer_applied_commit(change: InfraChange, spec: RunSpec, repo, applied_commit: AppliedCommit | None) -> str | None:
    """For an apply or destroy: the later commit this unit was already applied at, if there is one (a crashed run
    retried, or an old commit launched by hand, must not roll a unit back)."""
    from ..integrations.git import is_ancestor

    if applied_commit is None or change.unit is None or change.action not in (Action.APPLY, Action.DESTROY):
        return None
    applied = applied_commit(change.unit)
    if applied and applied != spec.head and is_ancestor(repo, spec.head, applied):
        return applied
    return None


def _dispatch(change: InfraChange, spec: RunSpec, prepared: CommitExecutor | None, repo,
              baseline: Baseline | None) -> Outcome:
    try:
        if change.unit is None:
            return _account_change(change, spec, repo, baseline)
        if prepared is None:
            return Outcome.note(change, Status.FAILED, "no executor for this run")
        result = prepared.executor.execute(
            ExecuteRequest(unit=change.unit, action=change.action, event=spec.event, head=spec.head, base=spec.base,
                           pr=spec.pr))
    except Exception as exc:  # a bug or an unexpected tool failure: the change fails, the run goes on
        result = Result(status=Status.FAILED, message=f"internal error: {type(exc).__name__}: {exc}")
    return Outcome.of(change, result)


def _account_change(change: InfraChange, spec: RunSpec, repo, baseline: Baseline | None) -> Outcome:
    from ..integrations.git_tree import read_blobs

    name = change.account
    assert name is not None, "an account change names its account"
    if change.type is ChangeType.ACCOUNT_DELETED:
        return Outcome.note(change, Status.VALIDATED, f"account {name!r} was removed from the accounts file; its "
                                                      "infrastructure is not destroyed by this")
    accounts_file = change.triggers[0]  # the accounts file of the deploy branch's configuration
    try:
        found = read_blobs(repo, [f"{spec.head}:{accounts_file}"]).get(f"{spec.head}:{accounts_file}")
        accounts, problems = load_accounts(found.decode(errors="replace") if found is not None else "", accounts_file)
    except ConfigError as exc:
        return Outcome.note(change, Status.FAILED, str(exc))
    account = accounts.entries.get(name)
    if account is None:
        mine = [str(p) for p in problems if f"account {name!r}" in p.message] or [f"account {name!r} is not valid"]
        return Outcome.note(change, Status.FAILED, "; ".join(mine))
    if not account.email:
        return Outcome.note(change, Status.FAILED, f"account {name!r}: email is missing")
    if change.action is Action.BASELINE:
        return _baseline(change, name, account, baseline)
    return Outcome.note(change, Status.VALIDATED, f"account {name!r} ({account.id}) is valid")


def _baseline(change: InfraChange, name: str, account, baseline: Baseline | None) -> Outcome:
    from ..redact import default_redactor
    from .account_factory import open_baseline

    if baseline is None:
        return Outcome.note(change, Status.SKIPPED, f"account {name!r}: no repository to open the baseline pull "
                                                    "request in")
    try:
        result = open_baseline(baseline.location, baseline.deploy_branch, name, account, client=baseline.client,
                               push_token=baseline.push_token)
    except Exception as exc:  # git or GitHub refused: the change fails with their message, the run goes on
        return Outcome.note(change, Status.FAILED, default_redactor()(f"baseline for account {name!r}: {exc}"))
    return Outcome.note(change, Status.SUCCEEDED if result.pushed else Status.NO_CHANGES,
                        f"account {name!r}: {result.message()}", pull_request=result.pull_request)


class AssetRecord(BaseModel):
    """What the asset lineage records of one unit: a materialization (a successful apply or destroy of a
    deploy-branch commit) or an observation (a plan that ran), with the plan's resource changes."""

    kind: Literal["materialization", "observation"]
    unit: str
    commit: str
    action: str
    status: str
    account: str
    resources_added: int
    resources_changed: int
    resources_destroyed: int
    duration_s: float
    pr: int | None = None
    role_arn: str | None = None
    resource_changes: list[ResourceChange] = Field(default_factory=list)
    resource_changes_not_listed: int | None = None
    message: str | None = None


def asset_records(outcomes: list[Outcome], spec: RunSpec, on_deploy_branch: bool,
                  pr: int | None = None) -> list[AssetRecord]:
    """The asset records of a step's outcomes: a materialization for each successful apply or destroy of a
    deploy-branch commit, an observation for each plan that ran."""
    records = []
    for o in outcomes:
        change = o.change
        if change.unit is None or o.status in (Status.SKIPPED, Status.REFUSED):
            continue
        if change.action in (Action.APPLY, Action.DESTROY):
            if not (spec.event is Event.PUSH and on_deploy_branch and o.status in (Status.SUCCEEDED,
                                                                                   Status.NO_CHANGES)):
                continue
            kind = "materialization"
        elif change.action in (Action.PLAN, Action.PLAN_DESTROY):
            kind = "observation"
        else:
            continue
        resources = o.summary.resources
        records.append(AssetRecord(
            kind=kind, unit=change.unit, commit=spec.head, action=change.action.value, status=o.status.value,
            account=change.account or "", resources_added=o.summary.add, resources_changed=o.summary.change,
            resources_destroyed=o.summary.destroy, duration_s=round(o.duration_s, 1), pr=pr, role_arn=o.role_arn,
            resource_changes=resources[:RESOURCES_LISTED],
            resource_changes_not_listed=len(resources) - RESOURCES_LISTED if len(resources) > RESOURCES_LISTED
            else None,
            message=o.message[:1000] if kind == "observation" and not o.status.ok else None))
    return records
