"""The job: orchestrate -> one step per infrastructure change -> report.

`orchestrate` detects the changes and emits one dynamic output per change: every change of a pull request at once
(`plan[...]` steps), or the first wave of a push (`apply_wave_0[...]`). A Dagster graph is fixed when the code
loads, so a push's dependency order is a fixed number of stages (PIPELINES_WAVE_STAGES): each `wave_N` step takes
the collected results of the wave before, skips the dependents of failures, and emits the next wave. When a push
has more waves than stages, the last stage runs the remaining waves in one step, wave by wave. `report` (a pull
request's plans) or `report_applies` (after the last stage) records the last results and reports.

`orchestrate` starts one of two chains: `planned` (a pull request: its plans, then `report`) or `progress` (a
push: the stages, then `report_applies`). The other chain's steps are skipped as a whole, so a pull request's run
starts no process for stages it has nothing to give. Every other output is always produced (a stage with nothing to
do emits no change): with `require_upstream_step_success` off, Dagster's executor (1.13.27) waits forever for a
step with a fan-in input of which only some sources were produced.

A change whose action fails yields its outcome and then fails its step: the run's collect steps go on (the
executor's `require_upstream_step_success: false`), the report reports it, and "Re-execute from failure" in the UI
runs exactly the failed changes again (and the stages and report after them), updating the same comment.
"""

import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from enum import Enum
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ..core import dispatch as core
from ..core import watch
from ..core.bounded import detect_changes_bounded
from ..core.dispatch import Item, Progress
from ..core.model import Event, Outcome, RunSpec
from ..core.reporter import Reporter, failed_outcomes, run_failed, summary_counts
from .execution import REPORTED, ChangeRunner
from .resources import GitHub, InfraRepo

if TYPE_CHECKING:
    from ..integrations.github import PullRequestInfo

DETECTING_NOTE_AFTER_S = 3.0
JOB_NAME = "infrastructure_pipeline"
REPORT_STEP, APPLY_REPORT_STEP = "report", "report_applies"  # a pull request's report, a push's
REPORT_STEPS = (REPORT_STEP, APPLY_REPORT_STEP)
# the executor setting that lets collect steps run although some of the steps they collect failed
FAILED_STEPS_DO_NOT_STOP_THE_RUN = {"step_dependency_config": {"require_upstream_step_success": False}}
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster-k8s's per-op (step pod) configuration
CHANGE_STEP_TAGS = {"kind": "dispatcher"}  # the steps that run changes (plan[...], apply_wave_N[...])


def step_limits(max_parallel: int) -> dict:
    """Executor settings: at most `max_parallel` change steps at a time and, beside them, the run's one chain of
    light steps (orchestrate, wave_N, report), which so never waits for a change's slot (a pull request's run
    passes its wave_N steps while the plans run); failed steps do not stop the run."""
    [(key, value)] = CHANGE_STEP_TAGS.items()
    return {"max_concurrent": max_parallel + 1,
            "tag_concurrency_limits": [{"key": key, "value": value, "limit": max_parallel}],
            **FAILED_STEPS_DO_NOT_STOP_THE_RUN}


class EventName(str, Enum):
    """The run config's `event` (member names are what the Launchpad shows and takes)."""

    pull_request = "pull_request"
    push = "push"


class OrchestrateConfig(dg.Config):
    event: EventName = Field(EventName.pull_request, description=(
        "pull_request: plan the change with the accounts' plan roles; push: apply a commit of the deploy branch "
        "with their apply roles"))
    pr_number: int | None = Field(None, description=(
        "The pull request. Alone it is enough for a plan: its head and base branch come from GitHub (in local "
        "mode its head is the remote's refs/pull/<number>/head, planned against the deploy branch). With head_ref "
        "it is the pull request the report goes to."))
    head_ref: str | None = Field(None, description=(
        "The change's last commit: a branch, tag, sha or revision. Alone, for a pull_request: that branch against "
        "the deploy branch; for a push: the deploy-branch commit to apply, from its first parent."))
    base_ref: str | None = Field(None, description=(
        "Where the change starts: a branch, tag, sha or revision. Default: the pull request's base branch (or "
        "the deploy branch); for a push, head's first parent. A pull request's diff starts at its merge base "
        "with this."))


class LaunchError(ValueError):
    """The run config names no change that can run; the message says what to give instead."""


def launch_refs(config: OrchestrateConfig, repo, deploy_branch: str,
                client) -> "tuple[str | None, str, PullRequestInfo | None]":
    """(base, head, the pull request) as the run config gives them, or looked up: a pull request's on GitHub
    (`client`; it must be readable, since whether it comes from a fork decides its credentials), or in local mode
    (`client` None) the remote's refs/pull/<number>/head. The base is None when not given (a pull request's is its
    base branch, a push's the head's first parent)."""
    from ..integrations.git import GitError, resolve
    from ..integrations.github import GitHubError

    number, head, base = config.pr_number, config.head_ref, config.base_ref
    if number is not None and number < 1:
        raise LaunchError(f"pr_number {number}: a pull request number is 1 or more")
    if head is None and number is None:
        raise LaunchError("nothing to run: give pr_number (a pull request), or head_ref (a branch or commit)")
    if head is None and config.event is EventName.push:
        raise LaunchError("a push applies a commit of the deploy branch: give it as head_ref (pr_number alone "
                          "plans a pull request)")
    pr = None
    if number is not None and client is not None:
        try:
            pr = client.get_pull_request(number)
        except GitHubError as exc:
            raise LaunchError(f"pull request #{number}: {exc}") from None
    if head is None and pr is not None:
        head, base = pr.head_sha, base or pr.base_ref
    elif head is None:
        head = f"refs/pull/{number}/head"
        try:
            resolve(repo, head)
        except GitError:
            raise LaunchError(f"pull request #{number}: {head} is not in the repository (in local mode a pull "
                              "request's head is that ref of the remote, as GitHub serves it); give head_ref, the "
                              "branch to plan, instead") from None
    return base, head, pr


def refs_named(config: OrchestrateConfig) -> list[str]:
    """The refs a run's config names, to fetch before anything else: the pull request's head as GitHub serves it,
    and branch names."""
    refs = [f"refs/pull/{config.pr_number}/head"] if config.pr_number else []
    names = [r for r in (config.head_ref, config.base_ref) if r]
    return refs + [f"refs/heads/{r}" for r in names if re.fullmatch(r"[\w./-]+", r) and not re.fullmatch(
        r"[0-9a-f]{40}", r) and ".." not in r and not r.startswith(("refs/", "-"))]


def replaced_tip(context: dg.OpExecutionContext, repo, branch: str) -> str | None:
    """The tip a rewrite of the deploy branch replaced, when this push follows one (the deploy-branch sensor's tag,
    believed only when that commit is indeed no longer on the branch)."""
    from ..integrations.git import branch_sha, has_commit, is_ancestor

    old = context.run.tags.get(watch.TAG_REPLACED_TIP)
    tip = branch_sha(repo, branch)
    if not old or tip is None or not has_commit(repo, old) or is_ancestor(repo, old, tip):
        return None
    return old


def _dynamic(item: Item, output_name: str) -> dg.DynamicOutput:
    first = item.changes[0]
    return dg.DynamicOutput(item, mapping_key=item.key, output_name=output_name,
                           metadata={"unit": first.name, "type": first.type.value, "action": first.action.value,
                                     "account": first.account or "", "wave": first.wave,
                                     **({"changes": len(item.changes)} if len(item.changes) > 1 else {})})


def _orchestrate(context: dg.OpExecutionContext, config: OrchestrateConfig, infra_repo: InfraRepo, github: GitHub,
                 changes: ChangeRunner, stages: int):
    from ..core.repo_config import LaunchRefused, push_range
    from ..integrations.git import GitError, merge_base, resolve

    client = github.client()
    try:
        repo, branch = infra_repo.fetch_for_run(refs_named(config))
        event = Event(config.event.value)
        base_ref, head_ref, pull = launch_refs(config, repo, branch, client)

        def shas() -> tuple[str, str | None]:
            return resolve(repo, head_ref), resolve(repo, base_ref) if base_ref else None

        try:
            head, base = shas()
        except GitError:  # not fetched on its own (a tag, an expression, another base branch): fetch all, once
            infra_repo.git_dir(fetch=True)
            head, base = shas()
        if event is Event.PULL_REQUEST:  # a change request is what its branch adds since it forked off the base
            base = base or resolve(repo, f"refs/heads/{branch}")
            base = merge_base(repo, base, head) or base
        else:  # the deploy branch's own history only: what pushing it applied
            base, head = push_range(repo, branch, head, base, head_ref)
        spec = RunSpec(event=event, base=base, head=head, pr=config.pr_number)
    except (GitError, LaunchRefused, ValueError) as exc:
        raise dg.Failure(description=f"cannot start: {exc}") from None
    context.instance.add_run_tags(context.run_id, watch.run_tags(event.value, head, spec.pr))
    if event is Event.PUSH:
        changes.wait_for_other_applies(context)
    reporter = Reporter(client, spec, changes.run_url(context.run_id))
    reporter.started(comment=False)
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
    plan = core.make_plan(spec, change_set, blocked).model_copy(update={
        "replaced_tip": replaced_tip(context, repo, branch) if event is Event.PUSH else None})
    reporter.planned(plan)
    plan = plan.model_copy(update={"pull_request": reporter.pull_request()})  # a push's merged PR, if any
    context.instance.add_run_tags(context.run_id, watch.run_tags(
        event.value, head, plan.pull_request, [c.account for c in plan.changes]))
    for problem in plan.errors:
        context.log.error(problem)
    progress, items = core.start(plan, stages)
    yield dg.Output(progress, "planned" if event is Event.PULL_REQUEST else "progress", metadata={
        "changes": len(plan.changes), "errors": len(plan.errors), "warnings": len(plan.warnings),
        "waves": 1 + max((c.wave for c in plan.changes), default=-1), "blocked": plan.blocked or ""})
    for item in items:
        yield _dynamic(item, "plans" if event is Event.PULL_REQUEST else "applies")


def _stage(progress: Progress, results: list[list[Outcome]], stage: int, stages: int):
    """Record the previous wave's results; emit the next wave (nothing when the run has no more)."""
    progress, items = core.next_stage(progress, _flat(results), stage=stage, last_stage=stages - 1)
    yield dg.Output(progress, "progress", metadata={"changes": sum(len(i.changes) for i in items)})
    for item in items:
        yield _dynamic(item, "applies")


def _flat(results: list[list[Outcome]]) -> list[Outcome]:
    return [o for batch in results for o in batch]


def _report(context: dg.OpExecutionContext, progress: Progress, results: list[list[Outcome]],
            github: GitHub, changes: ChangeRunner):
    progress = progress.record(_flat(results))
    plan, outcomes = progress.plan, progress.outcome_list()
    reporter = Reporter(github.client(), plan.spec, changes.run_url(context.run_id), plan.pull_request)
    body = reporter.finished(plan, outcomes)
    changes.retry_if_transient(context, reporter.problems if reporter.transient_problems else [])  # idempotent
    yield dg.Output(progress, metadata={"report": dg.MetadataValue.md(body), "statuses": summary_counts(outcomes),
                                        "github_problems": reporter.problems})
    if run_failed(plan, outcomes) and not failed_outcomes(outcomes):  # failed steps already fail the run
        raise dg.Failure(description=plan.rewrite_message() or f"{len(plan.errors)} repository error(s)",
                         metadata={REPORTED: True})


def make_pipeline_job(*, stages: int = 8, max_parallel: int = 4,
                      executor_def: dg.ExecutorDefinition | None = None, plan_tags: Mapping[str, str] = {},
                      apply_tags: Mapping[str, str] = {}, name: str = JOB_NAME) -> dg.JobDefinition:
    """The job, with `stages` apply stages.
    `plan_tags` and `apply_tags` are more tags of the plan and apply steps (`k8s_step_tags`)."""

    @dg.op(out={"progress": dg.Out(Progress, is_required=False, description="a push's start (its stages follow)"),
                "planned": dg.Out(Progress, is_required=False, description="a pull request's plan (its report "
                                                                           "follows)"),
                "plans": dg.DynamicOut(Item), "applies": dg.DynamicOut(Item)},
           tags={"kind": "orchestrator"})
    def orchestrate(context: dg.OpExecutionContext, config: OrchestrateConfig, infra_repo: dg.ResourceParam[InfraRepo],
                    github: dg.ResourceParam[GitHub], changes: dg.ResourceParam[ChangeRunner]):
        """Detect and classify the changes between base and head; emit a pull request's changes, or a push's
        first wave."""
        yield from _orchestrate(context, config, infra_repo, github, changes, stages)

    @dg.op(out=dg.Out(list[Outcome]), tags={**CHANGE_STEP_TAGS, **plan_tags})
    def plan_change(context: dg.OpExecutionContext, item: Item, changes: dg.ResourceParam[ChangeRunner]):
        """Plan one change of a pull request with its account's plan role."""
        yield from changes.run(context, item)

    @dg.op(out=dg.Out(list[Outcome]), tags={**CHANGE_STEP_TAGS, **apply_tags})
    def apply_change(context: dg.OpExecutionContext, item: Item, changes: dg.ResourceParam[ChangeRunner]):
        """Apply (or destroy) one change of a deploy-branch commit with its account's apply role."""
        yield from changes.run(context, item)

    def stage_op(stage: int):
        @dg.op(name=f"wave_{stage}", out={"progress": dg.Out(Progress), "applies": dg.DynamicOut(Item)},
               tags={"kind": "orchestrator"})
        def wave(progress: Progress, results: list[list[Outcome]]):
            """Record the previous wave's outcomes, skip the dependents of failures, emit the next wave."""
            yield from _stage(progress, results, stage, stages)

        return wave

    @dg.op(name=REPORT_STEP, out=dg.Out(Progress), tags={"kind": "reporter"})
    def report(context: dg.OpExecutionContext, progress: Progress, plans: list[list[Outcome]],
               github: dg.ResourceParam[GitHub], changes: dg.ResourceParam[ChangeRunner]):
        """A pull request's plans: the PR comment and commit status (GitHub), or the report as run metadata
        (local); fails the run when the repository has errors."""
        yield from _report(context, progress, plans, github, changes)

    @dg.op(name=APPLY_REPORT_STEP, out=dg.Out(Progress), tags={"kind": "reporter"})
    def report_applies(context: dg.OpExecutionContext, progress: Progress, results: list[list[Outcome]],
                       github: dg.ResourceParam[GitHub], changes: dg.ResourceParam[ChangeRunner]):
        """A push's applies: the merged pull request's comment, the commit status and the failure issue (GitHub),
        or the report as run metadata (local); fails the run when the repository has errors."""
        yield from _report(context, progress, results, github, changes)

    executor_def = executor_def or dg.multiprocess_executor.configured({
        **step_limits(max_parallel),
        # steps fork from a server that has already imported Dagster and this code: no per-step start-up
        # (dagster_postgres for the production profile; the forkserver skips a module that is not installed)
        "start_method": {"forkserver": {"preload_modules": ["pipelines_dagster.defs.step_preload",
                                                            "dagster_postgres"]}}})

    @dg.job(name=name, tags={"pipelines/job": name}, executor_def=executor_def,
            description="Plans a pull request's infrastructure changes, or applies a deploy-branch commit's in "
                        "dependency order: one step per change, each with its account's credentials.")
    def infrastructure_pipeline():
        progress, planned, plans, applies = orchestrate()
        report(planned, plans.map(plan_change.alias("plan")).collect())
        for stage in range(1, stages):
            progress, applies = stage_op(stage)(
                progress, applies.map(apply_change.alias(f"apply_wave_{stage - 1}")).collect())
        report_applies(progress, applies.map(apply_change.alias(f"apply_wave_{stages - 1}")).collect())

    return infrastructure_pipeline


def k8s_step_executor(max_parallel: int) -> dg.ExecutorDefinition:
    """Each step in a Kubernetes Job of its own (dagster-k8s's k8s_job_executor, the deploy extra), with the same
    limits (`step_limits`) and handling of failed steps as processes; step pods get the run launcher's
    configuration (environment, volumes, security context) and their ops' `k8s_step_tags`."""
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise RuntimeError("PIPELINES_STEP_EXECUTOR=k8s needs dagster-k8s: pip install "
                           "'pipelines-dagster[deploy]'") from None
    return k8s_job_executor.configured(step_limits(max_parallel), name="k8s_pipeline")


def k8s_step_tags(service_account: str) -> dict[str, str]:
    """Op tags that make the k8s executor run the op's step pods as `service_account`."""
    return {K8S_CONFIG_TAG: json.dumps({"pod_spec_config": {"service_account_name": service_account}})}


def in_process_executor() -> dg.ExecutorDefinition:
    """Steps one after the other in the calling process (the command line's `run`, tests), with the same
    handling of failed steps as the job's own executor."""
    return dg.in_process_executor.configured(FAILED_STEPS_DO_NOT_STOP_THE_RUN, name="in_process_pipeline")


def report_output(events):
    """The output event of a run's report step (`report` or `report_applies`) among its `events`, if it got that
    far."""
    return next((e for e in events if e.step_key in REPORT_STEPS and e.event_type_value == "STEP_OUTPUT"), None)


def report_markdown(result) -> str | None:
    """The report a finished run wrote (its report step's markdown metadata), if it got that far."""
    output = report_output(result.all_node_events)
    return output.event_specific_data.metadata["report"].value if output else None
