"""The two jobs: `infrastructure_plan` (a pull request: orchestrate -> one `plan[...]` step per change -> report)
and `infrastructure_apply` (a deploy-branch commit: orchestrate -> waves of `apply_wave_N[...]` steps -> report).

`orchestrate` detects the changes and emits one dynamic output per change: every change of a pull request at once,
or the first wave of a push. A Dagster graph is fixed when the code loads, so a push's dependency order is a fixed
number of stages (PIPELINES_WAVE_STAGES): each `wave_N` step takes the collected results of the wave before, skips
the dependents of failures, and emits the next wave. When a push has more waves than stages, the last stage runs the
remaining waves in one step, wave by wave. `report` records the last results and reports.

A change whose action fails yields its outcome and then fails its step: the run's collect steps go on (the
executor's `require_upstream_step_success: false`), the report reports it, and "Re-execute from failure" in the UI
runs exactly the failed changes again (and the stages and report after them), updating the same comment.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import dagster as dg

from ..core import dispatch, render, run_requests
from ..core.detection_process import detect_changes_bounded
from ..core.dispatch import Progress, StepChanges
from ..core.github_updater import Updater
from ..core.model import Event, Outcome
from ..core.reporter import Reporter, failed_outcomes, run_failed, summary_counts
from .execution import REPORTED, ChangeRunner
from .launch import ApplyConfig, PlanConfig, replaced_tip, run_spec
from .resources import GitHub, InfraRepo

DETECTING_NOTE_AFTER_S = 3.0
PLAN_JOB, APPLY_JOB = "infrastructure_plan", "infrastructure_apply"
JOB_EVENTS = {PLAN_JOB: Event.PULL_REQUEST, APPLY_JOB: Event.PUSH}
ORCHESTRATE_STEP, REPORT_STEP = "orchestrate", "report"
# the executor setting that lets collect steps run although some of the steps they collect failed
FAILED_STEPS_DO_NOT_STOP_THE_RUN = {"step_dependency_config": {"require_upstream_step_success": False}}
CHANGE_STEP_TAGS = {"kind": "dispatcher"}  # the steps that run changes (plan[...], apply_wave_N[...])
ORCHESTRATOR_TAGS, REPORTER_TAGS = {"kind": "orchestrator"}, {"kind": "reporter"}


def step_limits(max_parallel: int) -> dict:
    """Executor settings: at most `max_parallel` change steps at a time and, beside them, the run's one chain of
    light steps (orchestrate, wave_N, report), which so never waits for a change's slot; failed steps do not stop
    the run."""
    [(key, value)] = CHANGE_STEP_TAGS.items()
    return {"max_concurrent": max_parallel + 1,
            "tag_concurrency_limits": [{"key": key, "value": value, "limit": max_parallel}],
            **FAILED_STEPS_DO_NOT_STOP_THE_RUN}


def _orchestrate(context: dg.OpExecutionContext, config: PlanConfig | ApplyConfig, infra_repo: InfraRepo,
                 github: GitHub, changes: ChangeRunner, stages: int):
    if isinstance(config, PlanConfig) and run_requests.TAG_APPLY_LOCK in context.run.tags:
        raise dg.Failure(description=f"cannot start: a plan carries no {run_requests.TAG_APPLY_LOCK} tag (the run "
                                     "queue would hold the repository's applies back behind it)")
    client = github.client()
    spec, branch, repo, pull = run_spec(config, infra_repo, client)
    event = spec.event
    context.instance.add_run_tags(context.run_id, run_requests.run_tags(event.value, spec.head, spec.pr))
    if event is Event.PUSH:
        changes.wait_for_other_applies(context)
    updater = Updater(client)
    pull_request = updater.merged_pull_request(spec.head) if event is Event.PUSH else spec.pr
    reporter = Reporter(updater, spec, changes.run_url(context.run_id), pull_request)
    reporter.started()
    blocked = None
    if pull is not None and pull.is_fork:
        blocked = "this pull request comes from a fork: it gets no plan and no credentials"
    with ThreadPoolExecutor(max_workers=1) as pool:  # say "detecting changes" only when it takes a while
        detection = pool.submit(lambda: detect_changes_bounded(
            repo, spec.base, spec.head, event, timeout_s=infra_repo.detect_timeout_s,
            memory_mb=infra_repo.detect_memory_mb, cache_dir=infra_repo.index_cache or False,
            deploy_branch=infra_repo.deploy_branch_override))
        try:
            change_set = detection.result(timeout=DETECTING_NOTE_AFTER_S)
        except FutureTimeout:
            reporter.detecting()
            change_set = detection.result()
    plan = dispatch.make_plan(spec, change_set, blocked, pull_request).model_copy(update={
        "replaced_tip": replaced_tip(context, repo, branch) if event is Event.PUSH else None,
        "subject": _subject(context, config, spec, branch)})
    reporter.planned(plan)
    context.instance.add_run_tags(context.run_id, run_requests.run_tags(
        event.value, spec.head, plan.pull_request, [c.account for c in plan.changes]))
    for problem in plan.errors:
        context.log.error(problem)
    progress, items = dispatch.start(plan, stages)
    yield dg.Output(progress, "progress", metadata={
        "changes": len(plan.changes), "errors": len(plan.errors), "warnings": len(plan.warnings),
        "waves": 1 + max((c.wave for c in plan.changes), default=-1), "blocked": plan.blocked or ""})
    for item in items:
        yield _dynamic(item)


def _subject(context: dg.OpExecutionContext, config: PlanConfig | ApplyConfig, spec, branch: str) -> str:
    """What the run is of, for its report's heading: its pull request, its branch, or the deploy branch."""
    if spec.event is Event.PUSH:
        return branch
    if spec.pr is not None:
        return f"pull request #{spec.pr}"
    name = context.run.tags.get(run_requests.TAG_BRANCH) or config.head_ref or ""
    return f"branch {name}" if name and not re.fullmatch(r"[0-9a-f]{40}", name) else "a change"


def _dynamic(item: StepChanges) -> dg.DynamicOutput:
    first = item.changes[0]
    return dg.DynamicOutput(item, mapping_key=item.key, output_name="changes",
                           metadata={"unit": first.name, "type": first.type.value, "action": first.action.value,
                                     "account": first.account or "", "wave": first.wave,
                                     **({"changes": len(item.changes)} if len(item.changes) > 1 else {})})


def _stage(progress: Progress, results: list[list[Outcome]], stage: int, stages: int):
    """Record the previous wave's results; emit the next wave (nothing when the run has no more)."""
    progress, items = dispatch.next_stage(progress, _flat(results), stage=stage, last_stage=stages - 1)
    yield dg.Output(progress, "progress", metadata={"changes": sum(len(i.changes) for i in items)})
    for item in items:
        yield _dynamic(item)


def _flat(results: list[list[Outcome]]) -> list[Outcome]:
    return [o for batch in results for o in batch]


def _report(context: dg.OpExecutionContext, progress: Progress, results: list[list[Outcome]],
            github: GitHub, changes: ChangeRunner):
    progress = progress.record(_flat(results))
    plan, outcomes = progress.plan, progress.outcome_list()
    updater = Updater(github.client())
    body = Reporter(updater, plan.spec, changes.run_url(context.run_id), plan.pull_request).finished(plan, outcomes)
    changes.retry_if_transient(context, updater.problems if updater.transient else [])  # the writes are idempotent
    yield dg.Output(progress, metadata={"report": dg.MetadataValue.md(body), "statuses": summary_counts(outcomes),
                                        "github_problems": updater.problems, **report_metadata(outcomes)})
    if run_failed(plan, outcomes) and not failed_outcomes(outcomes):  # failed steps already fail the run
        raise dg.Failure(description=plan.rewrite_message() or f"{len(plan.errors)} repository error(s)",
                         metadata={REPORTED: True})


UNITS_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("unit", "string"), dg.TableColumn("account", "string"), dg.TableColumn("action", "string"),
    dg.TableColumn("status", "string"), dg.TableColumn("plan", "string"), dg.TableColumn("duration_s", "float")])
PLANS_SHOWN = 50  # units whose plan is an entry of its own in the report step's metadata


def report_metadata(outcomes: list[Outcome]) -> dict:
    """The report as Dagster shows it best: a table of the changes, and each unit's plan as a markdown entry of its
    own (`plan: <unit>`), the units with destroys first."""
    rows = [dg.TableRecord({"unit": o.change.name, "account": o.change.account or "", "action": o.change.action.value,
                            "status": o.status.label, "plan": o.summary.line() if o.change.unit else "",
                            "duration_s": round(o.duration_s, 1)}) for o in outcomes]
    planned = sorted((o for o in outcomes if o.change.unit and (o.summary.has_changes or o.output or o.message)),
                     key=lambda o: (not o.summary.destroy, not o.status.failed))
    return {"changes": dg.MetadataValue.table(rows, schema=UNITS_SCHEMA),
            **{f"plan: {o.change.unit}": dg.MetadataValue.md(render.unit_plan(o)) for o in planned[:PLANS_SHOWN]}}


def _executor(max_parallel: int, executor_def: dg.ExecutorDefinition | None) -> dg.ExecutorDefinition:
    return executor_def or dg.multiprocess_executor.configured({
        **step_limits(max_parallel),
        # steps fork from a server that has already imported Dagster and this code: no per-step start-up
        # (dagster_postgres for the production profile; the forkserver skips a module that is not installed;
        # step_preload last, as it hides what is loaded from the garbage collector)
        "start_method": {"forkserver": {"preload_modules": ["dagster_postgres",
                                                            "pipelines_dagster.step_preload"]}}})


@dg.op(name=REPORT_STEP, out=dg.Out(Progress), tags=REPORTER_TAGS)
def report(context: dg.OpExecutionContext, progress: Progress, results: list[list[Outcome]],
           github: dg.ResourceParam[GitHub], changes: dg.ResourceParam[ChangeRunner]):
    """The run's report: the pull request's comment and commit status, and for a push with a failed apply the
    failure issue (GitHub), or the report as run metadata (local); fails the run when the repository has errors."""
    yield from _report(context, progress, results, github, changes)


def make_plan_job(*, max_parallel: int = 4, executor_def: dg.ExecutorDefinition | None = None) -> dg.JobDefinition:
    """A pull request's run: every change planned at once, one step each, with its account's plan role."""

    @dg.op(name="orchestrate_plan", out={"progress": dg.Out(Progress), "changes": dg.DynamicOut(StepChanges)},
           tags=ORCHESTRATOR_TAGS)
    def orchestrate(context: dg.OpExecutionContext, config: PlanConfig, infra_repo: dg.ResourceParam[InfraRepo],
                    github: dg.ResourceParam[GitHub], changes: dg.ResourceParam[ChangeRunner]):
        """Detect and classify what the pull request changes since it forked off its base; emit every change."""
        yield from _orchestrate(context, config, infra_repo, github, changes, stages=1)

    @dg.op(out=dg.Out(list[Outcome]), tags=CHANGE_STEP_TAGS)
    def plan(context: dg.OpExecutionContext, item: StepChanges, changes: dg.ResourceParam[ChangeRunner]):
        """Plan one change of a pull request with its account's plan role."""
        yield from changes.run(context, item, Event.PULL_REQUEST)

    @dg.job(name=PLAN_JOB, tags={"pipelines/job": PLAN_JOB}, executor_def=_executor(max_parallel, executor_def),
            description="Plans a pull request's infrastructure changes: one step per change, each with its "
                        "account's plan role; the report is the pull request's comment.")
    def infrastructure_plan():
        progress, planned = orchestrate.alias(ORCHESTRATE_STEP)()
        report(progress, planned.map(plan).collect())

    return infrastructure_plan


def make_apply_job(*, stages: int = 8, max_parallel: int = 4,
                   executor_def: dg.ExecutorDefinition | None = None) -> dg.JobDefinition:
    """A deploy-branch commit's run, with `stages` waves: each change applied (or destroyed) in its own step, with
    its account's apply role, dependencies first."""

    @dg.op(name="orchestrate_apply", out={"progress": dg.Out(Progress), "changes": dg.DynamicOut(StepChanges)},
           tags=ORCHESTRATOR_TAGS)
    def orchestrate(context: dg.OpExecutionContext, config: ApplyConfig, infra_repo: dg.ResourceParam[InfraRepo],
                    github: dg.ResourceParam[GitHub], changes: dg.ResourceParam[ChangeRunner]):
        """Detect and classify what the deploy-branch commit changes since its base; emit the first wave."""
        yield from _orchestrate(context, config, infra_repo, github, changes, stages)

    @dg.op(out=dg.Out(list[Outcome]), tags=CHANGE_STEP_TAGS)
    def apply(context: dg.OpExecutionContext, item: StepChanges, changes: dg.ResourceParam[ChangeRunner]):
        """Apply (or destroy) one change of a deploy-branch commit with its account's apply role."""
        yield from changes.run(context, item, Event.PUSH)

    def stage_op(stage: int):
        @dg.op(name=f"wave_{stage}", out={"progress": dg.Out(Progress), "changes": dg.DynamicOut(StepChanges)},
               tags=ORCHESTRATOR_TAGS)
        def wave(progress: Progress, results: list[list[Outcome]]):
            """Record the previous wave's outcomes, skip the dependents of failures, emit the next wave."""
            yield from _stage(progress, results, stage, stages)

        return wave

    @dg.job(name=APPLY_JOB, tags={"pipelines/job": APPLY_JOB}, executor_def=_executor(max_parallel, executor_def),
            description="Applies a deploy-branch commit's infrastructure changes in dependency order: one step per "
                        "change, each with its account's apply role.")
    def infrastructure_apply():
        progress, applies = orchestrate.alias(ORCHESTRATE_STEP)()
        for stage in range(1, stages):
            progress, applies = stage_op(stage)(
                progress, applies.map(apply.alias(f"apply_wave_{stage - 1}")).collect())
        report(progress, applies.map(apply.alias(f"apply_wave_{stages - 1}")).collect())

    return infrastructure_apply


def k8s_step_executor(max_parallel: int) -> dg.ExecutorDefinition:
    """Each step in a Kubernetes Job of its own (dagster-k8s's k8s_job_executor, the deploy extra), with the same
    limits (`step_limits`) and handling of failed steps as processes; step pods get what their run's pod gets
    (the run launcher's and the code location's configuration: identity, environment, volumes, security
    context)."""
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise RuntimeError("PIPELINES_STEP_EXECUTOR=k8s needs dagster-k8s: pip install "
                           "'pipelines-dagster[deploy]'") from None
    return k8s_job_executor.configured(step_limits(max_parallel), name="k8s_pipeline")


def in_process_executor() -> dg.ExecutorDefinition:
    """Steps one after the other in the calling process (the command line's `run`, tests), with the same
    handling of failed steps as the jobs' own executor."""
    return dg.in_process_executor.configured(FAILED_STEPS_DO_NOT_STOP_THE_RUN, name="in_process_pipeline")


def report_output(events):
    """The output event of a run's report step among its `events`, if it got that far."""
    return next((e for e in events if e.step_key == REPORT_STEP and e.event_type_value == "STEP_OUTPUT"), None)


def report_markdown(result) -> str | None:
    """The report a finished run wrote (its report step's markdown metadata), if it got that far."""
    output = report_output(result.all_node_events)
    return output.event_specific_data.metadata["report"].value if output else None
