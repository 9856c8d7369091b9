"""How a change runs in Dagster: the `changes` resource. It owns everything between "run this" and Dagster's
events: the deploy branch's configuration, each account's credentials, the executor, and turning typed outcomes
into `AssetMaterialization`, `AssetObservation`, `AssetCheckResult` and `Output` events. Each Dagster surface is
one `yield from` over it: a change step (`run`), Materialize (`materialize`), the drift checks (`check_drift`).
"""

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg

from ..core import dispatch
from ..core import drift as drift_core
from ..core.dispatch import AssetRecord, StepChanges
from ..core.engine_settings import EngineSettings
from ..core.lineage import AccountNode, Lineage, unit_key
from ..core.model import Event, Outcome, ResourceChange, Status
from ..settings import Settings
from .resources import GitHub, InfraRepo, apply_lock

REPORTED = "reported"  # metadata of a step failure whose cause the report reports
RESOURCE_CHANGES_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("address", "string", description="the resource's address in the unit"),
    dg.TableColumn("action", "string", description="create, update, delete or replace (from show -json)")])


@dataclass(frozen=True)
class Retries:
    """How Dagster retries a step: after a transient failure (a state lock, STS throttling, a GitHub outage), and
    while another apply of the repository is in progress."""

    transient: int
    transient_wait_s: float
    apply_lock: int
    apply_lock_wait_s: float


@dataclass(frozen=True)
class ChangeRunner:
    infra_repo: InfraRepo
    github: GitHub
    engine: EngineSettings
    accounts: tuple[AccountNode, ...]
    max_parallel: int
    retries: Retries
    ui_url: str | None
    region: str | None
    oidc_audience: str

    @classmethod
    def from_settings(cls, settings: Settings, infra_repo: InfraRepo, github: GitHub,
                      accounts: Sequence[AccountNode] = ()) -> "ChangeRunner":
        return cls(infra_repo=infra_repo, github=github, engine=EngineSettings.from_settings(settings),
                   accounts=tuple(accounts), max_parallel=settings.max_parallel,
                   retries=Retries(settings.transient_retries, settings.transient_retry_wait_s,
                                   settings.apply_lock_retries, settings.apply_lock_wait_s),
                   ui_url=settings.ui_url, region=settings.aws_region, oidc_audience=settings.oidc_audience)

    def description(self) -> str:
        e = self.engine
        values = {"units at a time per step": self.max_parallel, "action timeout s": e.action_timeout_s,
                  "unit user": e.unit_user or "the pipeline's own", "plugin dir": e.tf_plugin_dir,
                  "more variables for units": ", ".join(e.unit_env), "plans take the state lock": e.plan_lock,
                  "apply lock timeout": e.lock_timeout, "apply grace s": e.apply_grace_s,
                  "work dir": e.work_dir, "UI": self.ui_url, "STS region": self.region}
        return ("How changes run: the deploy branch's configuration, each account's credentials, Terraform in a "
                "private checkout as an unprivileged user.\n\n"
                + "\n".join(f"- {k}: `{v}`" for k, v in values.items() if v not in (None, "")))

    def run_url(self, run_id: str) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if self.ui_url else None

    # -- the three surfaces

    def run(self, context: dg.OpExecutionContext, item: StepChanges, event: Event) -> Iterator:
        """A change step of `event`'s job: the item's changes with their accounts' credentials. The outcomes are
        the step's output; a failed change then fails the step (the report has what it needs). An item of the other
        job (a re-execution across jobs) runs nothing."""
        from ..core.repo_files import ConfigError
        from ..core.trust import LaunchRefused, check_push_changes, push_range

        spec = item.spec
        repo = self.infra_repo.git_dir(fetch=False)
        prepared, baseline = None, None
        try:
            if spec.event is not event:
                raise LaunchRefused(f"this job runs {event.value} changes, not {spec.event.value} ones")
            branch = self.infra_repo.deploy_branch(repo)
            if spec.event is Event.PUSH:  # again here: a step's input comes from storage, not from orchestrate
                push_range(repo, branch, spec.head, spec.base)
                check_push_changes(repo, spec.base, spec.head, item.changes)
            if any(c.unit is not None for c in item.changes):  # account entries need no executor
                prepared = self._prepare(context, repo, spec.head)
        except (ConfigError, LaunchRefused) as exc:
            outcomes = [Outcome.note(c, Status.FAILED, f"configuration: {exc}") for c in item.changes]
            yield from self._finish(context, outcomes, [])
            return
        if any(c.action.value == "baseline" for c in item.changes):
            baseline = dispatch.Baseline(self.infra_repo.location, branch, self.github.client(),
                                         self.github.push_token(self.infra_repo.location))
        outcomes = dispatch.run_step(item, prepared, repo, self.max_parallel, baseline,
                                     applied_commit=lambda unit: applied_commit(context.instance, unit))
        self.retry_if_transient(context, transient_problems(outcomes))
        on_deploy_branch = prepared is not None and prepared.on_deploy_branch
        yield from self._finish(context, outcomes, dispatch.asset_records(outcomes, spec, on_deploy_branch,
                                                                          item.pull_request))

    def materialize(self, context: dg.AssetExecutionContext, units: list[str], commit: str | None) -> Iterator:
        """Applies `units` at the deploy-branch tip (`commit`, when given, must be it), dependencies first, under
        the repository's apply lock; a unit that fails, or is not a unit there, fails the step."""
        from ..core import run_requests
        from ..core.lineage import read_lineage
        from ..core.repo_files import ConfigError
        from ..integrations.git import GitError, resolve

        try:
            repo, _, _ = self.infra_repo.deploy_head()
            lineage = read_lineage(self.infra_repo.location, self.infra_repo.deploy_branch_override,
                                   cache_root=self.infra_repo.cache_root, index_cache=self.infra_repo.index_cache)
            if lineage.commit is None or (not lineage.units and lineage.notes):
                raise GitError("; ".join(lineage.notes) or "no deploy branch")
            branch, tip = lineage.deploy_branch, lineage.commit
            asked = resolve(repo, commit) if commit else tip
        except (GitError, ConfigError) as exc:
            raise dg.Failure(description=f"cannot read the deploy branch: {exc}") from None
        if asked != tip:
            raise dg.Failure(description=f"refused: {commit} ({asked[:12]}) is not the tip of the deploy branch "
                                         f"{branch} ({tip[:12]}); materializing applies the tip and nothing else")
        item, gone = dispatch.reconcile_changes(lineage, units)
        context.instance.add_run_tags(context.run.run_id, run_requests.run_tags(
            "push", tip, accounts=[c.account for c in item.changes]))
        self.wait_for_other_applies(context)
        context.log.info(f"applying {len(item.changes)} unit(s) at {branch} {tip[:12]}")
        try:
            prepared = self._prepare(context, repo, tip)
        except ConfigError as exc:
            raise dg.Failure(description=f"configuration of the deploy branch: {exc}") from None
        outcomes = dispatch.run_step(item, prepared, repo, self.max_parallel,
                                     applied_commit=lambda unit: applied_commit(context.instance, unit))
        self.retry_if_transient(context, transient_problems(outcomes))
        for o in outcomes:
            (context.log.info if o.status.ok else context.log.error)(f"{o.change.name}: {_said(o)}")
        for record in dispatch.asset_records(outcomes, item.spec, prepared.on_deploy_branch):
            yield dg.MaterializeResult(asset_key=unit_key(record.unit), metadata=asset_metadata(record))
        problems = [f"{unit}: not a unit of {branch} at {tip[:12]} (the deploy-branch run of the commit that "
                    "removed it destroys it)" for unit in gone]
        problems += [f"{o.change.name}: {_said(o)}" for o in outcomes if not o.status.ok]
        if problems:
            raise dg.Failure(description="; ".join(p[:500] for p in problems))

    def check_drift(self, context: dg.OpExecutionContext | dg.AssetCheckExecutionContext, lineage: Lineage,
                    units: list[str], check_name: str) -> Iterator[dg.AssetCheckResult]:
        """Plans `units` at the deploy-branch head with the plan role and `-detailed-exitcode`: one check result
        each; the drift issue (GitHub) lists what the latest result of every unit's check says."""
        from ..core.repo_files import ConfigError
        from ..integrations.git import GitError, resolve

        accounts = {u.path: u.account for u in lineage.units}
        todo = {p: accounts.get(p) for p in units}
        try:
            repo, branch, _ = self.infra_repo.deploy_head()
            head = resolve(repo, f"refs/heads/{branch}")
        except (GitError, ConfigError) as exc:
            raise dg.Failure(description=f"cannot read the deploy branch: {exc}") from None
        context.log.info(f"planning {len(todo)} unit(s) at {branch} {head[:12]}")
        try:
            prepared = self._prepare(context, repo, head, detailed_exitcode=True)
            findings = drift_core.check_units(prepared, repo, head, todo, self.max_parallel)
        except ConfigError as exc:
            findings = [drift_core.Finding(unit=p, state=drift_core.UNCHECKED, account=a, commit=head,
                                           message=f"configuration: {exc}") for p, a in todo.items()]
        if not self.github.local_mode:
            from ..core.github_updater import Updater
            from .drift import previous_findings

            current = {f.unit: f for f in findings}
            latest = {**previous_findings(context.instance, lineage, set(current), check_name), **current}
            said = Updater(self.github.client()).drift_issue(
                drift_core.open_findings(latest), deploy_branch=branch, commit=head,
                run_url=self.run_url(context.run.run_id))
            context.log.info(f"drift issue: {said}")
        for f in findings:
            level = context.log.info if f.passed else context.log.warning
            level(f"{f.unit}: {f.state}" + (f" ({f.summary.line()})" if f.state == drift_core.DRIFTED else
                                            f": {f.message}" if f.state == drift_core.UNCHECKED else ""))
            yield dg.AssetCheckResult(
                asset_key=dg.AssetKey(unit_key(f.unit)), check_name=check_name, passed=f.passed,
                severity=dg.AssetCheckSeverity.ERROR if f.state == drift_core.UNCHECKED else
                dg.AssetCheckSeverity.WARN,
                metadata={**f.to_metadata(), **({"resource_changes": resource_table(f.resources)}
                                                if f.resources else {})},
                description={drift_core.CLEAN: "the plan is empty", drift_core.GONE: f.message,
                             drift_core.DRIFTED: f"drifted: {f.summary.line()}",
                             drift_core.UNCHECKED: "the plan could not run"}[f.state])

    # -- shared by them

    def _prepare(self, context, repo, head: str, **engine_overrides):
        """The executor for `head`: the deploy branch's configuration, and credentials only for the accounts this
        code location loaded, as it loaded them."""
        from ..core.credentials import DeployedAccount
        from ..core.executor import prepare

        prepared = prepare(repo, head, deploy_branch=self.infra_repo.deploy_branch_override,
                           settings=dataclasses.replace(self.engine, **engine_overrides), region=self.region,
                           location=self.infra_repo.location, audience=self.oidc_audience,
                           deployed={a.name: DeployedAccount(a.id, a.plan_role_arn, a.apply_role_arn)
                                     for a in self.accounts})
        for notice in prepared.notices:
            context.log.warning(notice)
        return prepared

    def _finish(self, context, outcomes: list[Outcome], records: list[AssetRecord]) -> Iterator:
        for o in outcomes:
            log = context.log.error if o.status.failed else context.log.info
            log(f"{o.change.name}: {o.change.action.value} {o.status.value}" + (f": {o.message}" if o.message else ""))
        for record in records:
            event = dg.AssetMaterialization if record.kind == "materialization" else dg.AssetObservation
            yield event(asset_key=unit_key(record.unit), metadata=asset_metadata(record))
        yield dg.Output(outcomes, metadata={
            "status": ", ".join(o.status.value for o in outcomes),
            "plan": ", ".join(o.summary.line() for o in outcomes),
            "duration_s": round(sum(o.duration_s for o in outcomes), 1)})
        failed = [o for o in outcomes if o.status.failed]
        if failed:  # after the output: the run's later steps still get it
            raise dg.Failure(description="; ".join(f"{o.change.name}: {o.message or o.status.value}"[:500]
                                                   for o in failed), metadata={REPORTED: True})

    def retry_if_transient(self, context, problems: list[str]) -> None:
        """Failures that may clear: Dagster runs the step again later; after the last retry they are reported."""
        if problems and context.retry_number < self.retries.transient:
            context.log.warning(f"retrying in {self.retries.transient_wait_s:.0f} s: " + "; ".join(problems))
            raise dg.RetryRequested(max_retries=self.retries.transient, seconds_to_wait=self.retries.transient_wait_s)

    def wait_for_other_applies(self, context) -> None:
        """Applies to one repository never overlap. The deploy-branch sensor's runs carry the apply-lock tag, so
        the run queue starts one at a time; a push run launched without it (from the Launchpad), or a
        materialization of unit assets, takes the tag now and, while another apply of the repository is in
        progress, waits through Dagster's retries."""
        from ..core.run_requests import TAG_APPLY_LOCK

        lock = apply_lock(self.github, self.infra_repo)
        run_id = context.run.run_id
        if context.run.tags.get(TAG_APPLY_LOCK) != lock:
            context.instance.add_run_tags(run_id, {TAG_APPLY_LOCK: lock})
        records = context.instance.get_run_records(dg.RunsFilter(
            tags={TAG_APPLY_LOCK: lock}, statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
        mine = next((r.create_timestamp for r in records if r.dagster_run.run_id == run_id), None)
        others = [r.dagster_run.run_id for r in records  # the earlier run goes first
                  if r.dagster_run.run_id != run_id and (mine is None or r.create_timestamp <= mine)]
        if others:
            if context.retry_number < self.retries.apply_lock:
                context.log.warning(f"waiting for the apply run(s) in progress: {', '.join(others)}")
                raise dg.RetryRequested(max_retries=self.retries.apply_lock,
                                        seconds_to_wait=self.retries.apply_lock_wait_s)
            raise dg.Failure(description=f"another apply of this repository is still in progress "
                                         f"({', '.join(others)}); nothing was applied: launch this run again when it "
                                         "has finished")


def transient_problems(outcomes: list[Outcome]) -> list[str]:
    """Failures that may clear by themselves: a state lock whose holder may still be working, STS throttling."""
    return [f"{o.change.name}: {o.message or o.status.value}" for o in outcomes
            if (o.status is Status.STATE_LOCKED and not (o.lock and o.lock.stale)) or o.transient]


APPLYING_JOBS = ("infrastructure_apply", "__ASSET_JOB")  # the jobs whose runs apply units (Materialize: assets')


def applied_commit(instance: dg.DagsterInstance, unit: str) -> str | None:
    """The commit the unit was last applied or destroyed at: its latest materialization by a run of an applying job.
    A materialization reported without a run (the UI's or the API's "report materialization"), or by another job,
    is no record of an apply: believing it would let whoever reaches the UI block an apply or allow a rollback."""
    records = instance.fetch_materializations(dg.AssetKey(unit_key(unit)), limit=50).records
    jobs: dict[str, str | None] = {}
    for record in records:
        entry = record.event_log_entry
        if not entry.run_id:
            continue
        if entry.run_id not in jobs:
            run = instance.get_run_by_id(entry.run_id)
            jobs[entry.run_id] = run.job_name if run else None
        materialization = entry.asset_materialization
        if jobs[entry.run_id] in APPLYING_JOBS and materialization is not None:
            commit = materialization.metadata.get("commit")
            return commit.value if isinstance(commit, dg.TextMetadataValue) else None  # asset records' commit is text
    return None


def resource_table(rows: Sequence[ResourceChange]) -> dg.TableMetadataValue:
    """A plan's resource changes as a table on the asset's page."""
    return dg.MetadataValue.table(records=[dg.TableRecord({"address": r.address, "action": r.action}) for r in rows],
                                  schema=RESOURCE_CHANGES_SCHEMA)


def asset_metadata(record: AssetRecord) -> dict:
    """A unit's record as Dagster metadata: its resource changes as a table."""
    data = record.model_dump(exclude={"kind", "unit", "resource_changes"}, exclude_none=True)
    if record.resource_changes:
        data["resource_changes"] = resource_table(record.resource_changes)
    return data


def _said(outcome: Outcome) -> str:
    text = outcome.message or outcome.status.label
    return text if text.startswith(outcome.status.label) else f"{outcome.status.label}: {text}"
