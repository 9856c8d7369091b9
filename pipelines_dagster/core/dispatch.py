"""The dispatcher: one run's plan of changes, its waves, and each change run to an outcome.

An outcome is a JSON-able dict: the change, and the executor's result fields (status, summary, duration_s,
exit_code, output, message). Dispatching never raises for a failed change: a failed change is an outcome.
"""

import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from .config import ConfigError, load_accounts
from .engine import Result, Status
from .executor import ExecuteRequest, Prepared
from .model import Action, ChangeSet, ChangeType, Event

OK_STATUSES = frozenset({"succeeded", "no_changes", "validated"})
AppliedCommit = Callable[[str], str | None]


@dataclass
class RunSpec:
    """What one pipeline run is about."""

    event: str
    base: str  # full shas
    head: str
    pr: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Baseline:
    """Where AccountAdded baselines go: the repository to push to, the deploy branch, GitHub (None: local)."""

    location: str
    deploy_branch: str
    client: object | None = None
    push_token: str | None = None


def mapping_key(change: dict) -> str:
    """Dagster mapping keys: [A-Za-z0-9_], unique per change, not a keyword."""
    name = change["unit"] if change.get("unit") is not None else f"account {change.get('account')}"
    digest = hashlib.sha1(f"{change['type']}:{name}".encode()).hexdigest()[:8]
    return "c_" + re.sub(r"[^A-Za-z0-9_]", "_", name)[-48:] + "_" + digest


def make_plan(spec: RunSpec, change_set: ChangeSet, blocked: str | None = None) -> dict:
    """The run's plan: every change, the repository's errors and warnings, and outcomes as they arrive."""
    if blocked is None and change_set.errors and spec.event == Event.PUSH.value:
        blocked = "the repository has errors at this commit: nothing is applied until they are fixed"
    return {"spec": spec.to_dict(), "changes": [c.to_dict() for c in change_set.changes],
            "errors": [str(e) for e in change_set.errors], "warnings": [str(w) for w in change_set.warnings],
            "notices": list(change_set.notices), "blocked": blocked, "outcomes": {}}


def outcome(change: dict, status: str, message: str = "", **fields) -> dict:
    return {"change": change, "status": status, "message": message,
            "summary": fields.pop("summary", {"add": 0, "change": 0, "destroy": 0}), "duration_s": 0.0,
            "output": "", **fields}


def record(plan: dict, outcomes: list[dict]) -> dict:
    plan = dict(plan, outcomes=dict(plan["outcomes"]))
    for o in outcomes:
        plan["outcomes"][mapping_key(o["change"])] = o
    return plan


def work_items(plan: dict, max_items: int | None = None) -> tuple[list[list[dict]], list[dict]]:
    """The plan's changes grouped into items that can run in parallel, and outcomes for changes not run.

    An item is a chain: changes connected by dependencies, run in wave order inside one dispatch step.
    Independent chains are separate items; with more chains than `max_items` (the parallelism), chains share
    items so that no step waits for a free slot only to pay its start-up again. On push, when ordering crosses
    chains (accounts with different deploy_order, or destroys that must follow every apply), the whole plan is
    one item run wave by wave.
    """
    changes = plan["changes"]
    if plan.get("blocked"):
        return [], [outcome(c, "skipped", plan["blocked"]) for c in changes]
    if not changes:
        return [], []
    by_unit = {c["unit"]: i for i, c in enumerate(changes) if c.get("unit") is not None}
    parent = list(range(len(changes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, change in enumerate(changes):
        for dep in change.get("depends_on", []):
            if dep in by_unit:
                parent[find(i)] = find(by_unit[dep])
    groups: dict[int, list[dict]] = {}
    for i, change in enumerate(changes):
        groups.setdefault(find(i), []).append(change)
    items = list(groups.values())
    if plan["spec"]["event"] == Event.PUSH.value and len(items) > 1 and _crossing_order(items):
        items = [changes]
    if max_items and len(items) > max_items:
        bins: list[list[dict]] = [[] for _ in range(max_items)]
        for item in sorted(items, key=len, reverse=True):
            min(bins, key=len).extend(item)
        items = bins
    return [sorted(item, key=lambda c: c["wave"]) for item in items], []


def _crossing_order(items: list[list[dict]]) -> bool:
    """True when some chain must wait for another: its first wave is later than another chain's last."""
    spans = [(min(c["wave"] for c in item), max(c["wave"] for c in item)) for item in items]
    return any(start > 0 for start, _ in spans)


def skip_reason(plan: dict, change: dict, outcomes: dict) -> str | None:
    if plan["spec"]["event"] != Event.PUSH.value:
        return None  # plans change nothing: every plan runs
    by_unit = {o["change"]["unit"]: o for o in outcomes.values() if o["change"].get("unit") is not None}
    bad = [d for d in change.get("depends_on", []) if d in by_unit and by_unit[d]["status"] not in OK_STATUSES]
    if bad:
        return f"skipped: it depends on {', '.join(bad)}, which did not succeed"
    return None


def run_items(items: list[dict], spec: RunSpec, prepared: Prepared, repo, max_parallel: int = 4,
              baseline: Baseline | None = None, applied_commit: AppliedCommit | None = None) -> list[dict]:
    """Run changes in wave order, each wave's changes in parallel (bounded), skipping dependents of failures.
    `applied_commit(unit)`: the commit a unit was last applied (or destroyed) at, to refuse going backwards."""
    results: list[dict] = []
    plan = {"spec": spec.to_dict(), "outcomes": {}}
    for wave in sorted({c["wave"] for c in items}):
        todo = []
        for change in (c for c in items if c["wave"] == wave):
            reason = skip_reason(plan, change, plan["outcomes"])
            if reason:
                results.append(outcome(change, "skipped", reason))
            else:
                todo.append(change)
        with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
            done = list(pool.map(lambda c: dispatch_change(c, spec, prepared, repo, baseline, applied_commit),
                                 todo))
        results += done
        plan = record(plan, results)
    return results


def dispatch_change(change: dict, spec: RunSpec, prepared: Prepared, repo, baseline: Baseline | None = None,
                    applied_commit: AppliedCommit | None = None) -> dict:
    """One change to its outcome (with wall-clock start and end); never raises."""
    started = time.time()
    newer = newer_applied_commit(change, spec, repo, applied_commit)
    result = (outcome(change, "skipped", f"refused: {change['unit']} was already applied at {newer[:12]}, a later "
                                         f"commit than {spec.head[:12]}; applying this commit would take it back. "
                                         "Apply the deploy branch's head instead.")
              if newer else _dispatch(change, spec, prepared, repo, baseline))
    result.update(started_at=started, finished_at=time.time())
    return result


def newer_applied_commit(change: dict, spec: RunSpec, repo, applied_commit: AppliedCommit | None) -> str | None:
    """For an apply or destroy: the later commit this unit was already applied at, if there is one (a crashed run
    retried, or an old commit launched by hand, must not roll a unit back)."""
    from ..integrations.git import is_ancestor

    if applied_commit is None or change.get("unit") is None or change["action"] not in (Action.APPLY.value,
                                                                                         Action.DESTROY.value):
        return None
    applied = applied_commit(change["unit"])
    if applied and applied != spec.head and is_ancestor(repo, spec.head, applied):
        return applied
    return None


def _dispatch(change: dict, spec: RunSpec, prepared: Prepared, repo, baseline: Baseline | None) -> dict:
    try:
        if change.get("unit") is None:
            return _account_change(change, spec, repo, baseline)
        result = prepared.executor.execute(
            ExecuteRequest(unit=change["unit"], action=Action(change["action"]), event=Event(spec.event),
                           head=spec.head, base=spec.base, pr=spec.pr),
            on_deploy_branch=prepared.on_deploy_branch)
    except Exception as exc:  # a bug or an unexpected tool failure: the change fails, the run goes on
        result = Result(status=Status.FAILED, unit=change.get("unit"), action=change.get("action"),
                        message=f"internal error: {type(exc).__name__}: {exc}")
    data = result.to_dict()
    return outcome(change, data.pop("status"), data.pop("message"), summary=data.pop("summary"),
                   **{k: v for k, v in data.items() if k not in ("unit", "action")})


def _account_change(change: dict, spec: RunSpec, repo, baseline: Baseline | None) -> dict:
    from ..integrations.git import read_blobs

    name, action = change["account"], Action(change["action"])
    if change["type"] == ChangeType.ACCOUNT_DELETED.value:
        return outcome(change, "validated", f"account {name!r} was removed from the accounts file; its "
                                            "infrastructure is not destroyed by this")
    accounts_file = change["triggers"][0]  # the accounts file of the deploy branch's configuration
    try:
        accounts_spec = f"{spec.head}:{accounts_file}"
        text = read_blobs(repo, [accounts_spec]).get(accounts_spec)
        accounts, problems = load_accounts(text.decode(errors="replace") if text is not None else "", accounts_file)
    except ConfigError as exc:
        return outcome(change, "failed", str(exc))
    if name in accounts.entries and not accounts.entries[name].email:
        return outcome(change, "failed", f"account {name!r}: email is missing")
    if name in accounts.entries and action is Action.BASELINE:
        return _baseline(change, name, accounts.entries[name], baseline)
    if name in accounts.entries:
        return outcome(change, "validated", f"account {name!r} ({accounts.entries[name].id}) is valid")
    mine = [str(p) for p in problems if f"account {name!r}" in p.message] or [f"account {name!r} is not valid"]
    return outcome(change, "failed", "; ".join(mine))


def _baseline(change: dict, name: str, account, baseline: Baseline | None) -> dict:
    from .account_factory import open_baseline
    from .redact import default_redactor

    if baseline is None:
        return outcome(change, "skipped", f"account {name!r}: no repository to open the baseline pull request in")
    try:
        result = open_baseline(baseline.location, baseline.deploy_branch, name, account, client=baseline.client,
                               push_token=baseline.push_token)
    except Exception as exc:  # git or GitHub refused: the change fails with their message, the run goes on
        return outcome(change, "failed", default_redactor()(f"baseline for account {name!r}: {exc}"))
    return outcome(change, "succeeded" if result.pushed else "no_changes", f"account {name!r}: {result.message()}",
                   pull_request=result.pull_request)


def asset_events(outcomes: list[dict], spec: RunSpec, on_deploy_branch: bool,
                 pr: int | None = None) -> list[tuple[str, str, dict]]:
    """What the asset lineage records per unit: ("materialization", unit, metadata) for a successful apply or
    destroy of a deploy-branch commit, ("observation", unit, metadata) for a plan that ran."""
    events = []
    for o in outcomes:
        change = o["change"]
        unit, action = change.get("unit"), change["action"]
        if unit is None or o["status"] == "skipped":
            continue
        metadata = {"commit": spec.head, "action": action, "status": o["status"],
                    "account": change.get("account") or "", "resources_added": o["summary"]["add"],
                    "resources_changed": o["summary"]["change"], "resources_destroyed": o["summary"]["destroy"],
                    "duration_s": round(o.get("duration_s", 0.0), 1)}
        if pr is not None:
            metadata["pr"] = pr
        if action in (Action.APPLY.value, Action.DESTROY.value):
            if spec.event == Event.PUSH.value and on_deploy_branch and o["status"] in ("succeeded", "no_changes"):
                events.append(("materialization", unit, metadata))
        elif action in (Action.PLAN.value, Action.PLAN_DESTROY.value):
            if o["status"] not in OK_STATUSES:
                metadata["message"] = (o.get("message") or "")[:1000]
            events.append(("observation", unit, metadata))
    return events
