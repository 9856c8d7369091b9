"""The job: orchestrate -> dispatch (mapped over chains) -> report.

A Dagster graph is fixed when the code loads, so dependency order has a deliberate shape: `orchestrate` emits
one item per chain of changes connected by dependencies; `dispatch` runs a chain in wave order (skipping the
dependents of a failed apply), and independent chains run in parallel as separate steps.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import dagster as dg

from ..core import dispatch as core
from ..core import watch
from ..core.lineage import unit_key
from ..core.model import Event
from ..core.orchestrator import Orchestrator
from ..core.reporter import Reporter, failed_outcomes, run_failed, summary_counts
from .resources import EngineResource, GitHubResource, InfraRepoResource, apply_lock

DETECTING_NOTE_AFTER_S = 3.0
# failures that may clear (a state lock, STS throttling, GitHub 5xx or rate limits) retry their step this often
TRANSIENT_RETRIES = int(os.environ.get("PIPELINES_LOCK_RETRIES", "2"))
TRANSIENT_RETRY_WAIT_S = float(os.environ.get("PIPELINES_LOCK_RETRY_WAIT_S", "30"))
APPLY_LOCK_RETRIES = int(os.environ.get("PIPELINES_APPLY_LOCK_RETRIES", "60"))
APPLY_LOCK_WAIT_S = float(os.environ.get("PIPELINES_APPLY_LOCK_WAIT_S", "30"))
JOB_NAME = "infrastructure_pipeline"
REPORTED = "reported"  # metadata of the deliberate failure that follows a complete report


class OrchestrateConfig(dg.Config):
    event: str = "pull_request"
    base_ref: str
    head_ref: str
    pr_number: int | None = None


@dg.op(out={"plan": dg.Out(dict), "items": dg.DynamicOut(dict)}, tags={"kind": "orchestrator"})
def orchestrate(context: dg.OpExecutionContext, config: OrchestrateConfig, infra_repo: InfraRepoResource,
                github: GitHubResource, engine: EngineResource):
    """Detect and classify the changes between base and head; emit wave 0."""
    from ..integrations.git import GitError, resolve
    from ..integrations.refs import merge_base

    try:
        repo = infra_repo.git_dir()
        event = Event(config.event)
        base, head = resolve(repo, config.base_ref), resolve(repo, config.head_ref)
        if event is Event.PULL_REQUEST:  # a change request is what its branch adds since it forked off the base
            base = merge_base(repo, base, head) or base
        spec = core.RunSpec(event=event.value, base=base, head=head, pr=config.pr_number)
    except (GitError, ValueError) as exc:
        raise dg.Failure(description=f"cannot start: {exc}") from None
    if event is Event.PUSH:
        wait_for_other_applies(context, apply_lock(github, infra_repo))
    reporter = Reporter(github.client(), spec.to_dict(), engine.run_url(context.run_id))
    reporter.started(comment=False)
    blocked = None
    if config.pr_number is not None and reporter.client is not None:
        pr = reporter._guard("reading the pull request", lambda: reporter.client.get_pull_request(config.pr_number))
        if pr is not None and pr.is_fork:
            blocked = "this pull request comes from a fork: it gets no plan and no credentials"
    with ThreadPoolExecutor(max_workers=1) as pool:  # say "detecting changes" only when it takes a while
        # the orchestrator's cache connection must live in the thread that uses it
        detection = pool.submit(lambda: Orchestrator(repo, deploy_branch=infra_repo.deploy_branch).detect(
            spec.base, spec.head, event))
        try:
            change_set = detection.result(timeout=DETECTING_NOTE_AFTER_S)
        except FutureTimeout:
            reporter.detecting()
            change_set = detection.result()
    plan = core.make_plan(spec, change_set, blocked)
    reporter.planned(plan)
    context.add_output_metadata({"changes": len(plan["changes"]), "errors": len(plan["errors"]),
                                 "warnings": len(plan["warnings"]),
                                 "waves": 1 + max((c["wave"] for c in plan["changes"]), default=-1)},
                                output_name="plan")
    for problem in plan["errors"]:
        context.log.error(problem)
    items, skipped = core.work_items(plan, engine.max_parallel)
    plan = core.record(plan, skipped)
    yield dg.Output(plan, "plan")
    pr = reporter.pull_request() if items else None  # a push's merged PR: already looked up for the comment
    for changes in items:
        units = [str(c["unit"] or c["account"]) for c in changes]
        key = core.mapping_key(changes[0]) + (f"_and_{len(changes) - 1}" if len(changes) > 1 else "")
        yield dg.DynamicOutput({"changes": changes, "spec": plan["spec"], "alone": len(items) == 1, "pr": pr},
                               mapping_key=key, output_name="items",
                               metadata={"units": ", ".join(units)[:500], "type": changes[0]["type"],
                                         "action": changes[0]["action"], "account": str(changes[0]["account"])})


def retry_if_transient(context: dg.OpExecutionContext, problems: list[str]) -> None:
    """Failures that may clear: Dagster runs the step again later; after the last retry they are reported."""
    if problems and context.retry_number < TRANSIENT_RETRIES:
        context.log.warning(f"retrying in {TRANSIENT_RETRY_WAIT_S:.0f} s: " + "; ".join(problems))
        raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES, seconds_to_wait=TRANSIENT_RETRY_WAIT_S)


def wait_for_other_applies(context: dg.OpExecutionContext, lock: str) -> None:
    """Applies to one repository never overlap. The deploy-branch sensor's runs carry the apply-lock tag, so the
    run queue starts one at a time; a push run launched without it (from the Launchpad) takes the tag now and,
    while another apply of the repository is in progress, waits through Dagster's retries."""
    if context.run.tags.get(watch.TAG_APPLY_LOCK) != lock:
        context.instance.add_run_tags(context.run_id, {watch.TAG_APPLY_LOCK: lock})
    records = context.instance.get_run_records(dg.RunsFilter(
        tags={watch.TAG_APPLY_LOCK: lock}, statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    mine = next((r.create_timestamp for r in records if r.dagster_run.run_id == context.run_id), None)
    others = [r.dagster_run.run_id for r in records  # the earlier run goes first
              if r.dagster_run.run_id != context.run_id and (mine is None or r.create_timestamp <= mine)]
    if others:
        if context.retry_number < APPLY_LOCK_RETRIES:
            context.log.warning(f"waiting for the apply run(s) in progress: {', '.join(others)}")
            raise dg.RetryRequested(max_retries=APPLY_LOCK_RETRIES, seconds_to_wait=APPLY_LOCK_WAIT_S)
        raise dg.Failure(description=f"another apply of this repository is still in progress ({', '.join(others)}); "
                                     "nothing was applied: launch this run again when it has finished")


@dg.op(tags={"kind": "dispatcher"})
def dispatch(context: dg.OpExecutionContext, item: dict, infra_repo: InfraRepoResource,
             github: GitHubResource, engine: EngineResource) -> list:
    """Run one chain of changes in wave order with their accounts' credentials; never fails the step."""
    from ..core.config import ConfigError
    from ..core.executor import prepare

    spec = core.RunSpec(**item["spec"])
    repo = infra_repo.git_dir(fetch=False)
    prepared = None
    if any(c.get("unit") is not None for c in item["changes"]):  # account entries need no executor
        try:
            prepared = prepare(repo, spec.head, deploy_branch=infra_repo.deploy_branch, settings=engine.settings())
        except ConfigError as exc:
            return [core.outcome(c, "failed", f"configuration: {exc}") for c in item["changes"]]
        for notice in prepared.notices:
            context.log.warning(notice)
    baseline = None
    if any(c["action"] == "baseline" for c in item["changes"]):
        from ..core.repo_config import deploy_branch

        branch = prepared.deploy_branch if prepared else deploy_branch(repo, infra_repo.deploy_branch)
        baseline = core.Baseline(infra_repo.location, branch, github.client(),
                                 github.push_token(infra_repo.location))
    outcomes = core.run_items(item["changes"], spec, prepared, repo, engine.max_parallel if item["alone"] else 1,
                              baseline, applied_commit=lambda unit: applied_commit(context.instance, unit))
    # a state lock, or STS still throttling after the executor's own backoff (what succeeded re-plans to no changes)
    retry_if_transient(context, [f"{o['change']['unit']}: {o['message'] or o['status']}" for o in outcomes
                                 if o["status"] == "state_locked" or o.get("transient")])
    for o in outcomes:
        change = o["change"]
        log = context.log.info if o["status"] in core.OK_STATUSES | {"skipped"} else context.log.error
        log(f"{change['unit'] or change['account']}: {change['action']} {o['status']}"
            + (f": {o['message']}" if o.get("message") else ""))
    on_deploy_branch = prepared is not None and prepared.on_deploy_branch
    for kind, unit, metadata in core.asset_events(outcomes, spec, on_deploy_branch, item.get("pr")):
        event = dg.AssetMaterialization if kind == "materialization" else dg.AssetObservation
        context.log_event(event(asset_key=unit_key(unit), metadata=metadata))
    context.add_output_metadata({"statuses": ", ".join(o["status"] for o in outcomes),
                                 "summary": ", ".join(f"+{o['summary']['add']} ~{o['summary']['change']} "
                                                      f"-{o['summary']['destroy']}" for o in outcomes)})
    return outcomes


def applied_commit(instance: dg.DagsterInstance, unit: str) -> str | None:
    """The commit of the unit asset's latest materialization: where the unit was last applied or destroyed."""
    event = instance.get_latest_materialization_event(dg.AssetKey(unit_key(unit)))
    materialization = event.asset_materialization if event else None
    commit = materialization.metadata.get("commit") if materialization else None
    return getattr(commit, "value", commit)


@dg.op(tags={"kind": "reporter"})
def report(context: dg.OpExecutionContext, plan: dict, results: list, github: GitHubResource,
           engine: EngineResource):
    """The final PR comment, commit status and failure issue (GitHub), or the report as run metadata (local).
    Then, when a change failed or the repository has errors, it fails the run on purpose: the failure carries
    `reported: True`, so the run-failure sensor knows there is nothing left to report."""
    plan = core.record(plan, [o for batch in results for o in batch])
    outcomes = [plan["outcomes"][core.mapping_key(c)] for c in plan["changes"]
                if core.mapping_key(c) in plan["outcomes"]]
    reporter = Reporter(github.client(), plan["spec"], engine.run_url(context.run_id))
    body = reporter.finished(plan, outcomes)
    retry_if_transient(context, reporter.problems if reporter.transient_problems else [])  # writes are idempotent
    summary = {"failed": [o["change"]["unit"] or o["change"]["account"] for o in failed_outcomes(outcomes)],
               "errors": plan["errors"], "run_failed": run_failed(plan, outcomes), "outcomes": outcomes,
               "github_problems": reporter.problems}
    yield dg.Output(summary, metadata={"report": dg.MetadataValue.md(body), "statuses": summary_counts(outcomes),
                                       "github_problems": reporter.problems})
    if summary["run_failed"]:
        raise dg.Failure(description="; ".join(
            ([f"failed: {', '.join(summary['failed'])}"] if summary["failed"] else [])
            + ([f"{len(summary['errors'])} repository error(s)"] if summary["errors"] else [])),
            metadata={REPORTED: True})


@dg.job(name=JOB_NAME, tags={"pipelines/job": JOB_NAME},
        executor_def=dg.multiprocess_executor.configured({
            "max_concurrent": int(os.environ.get("PIPELINES_MAX_PARALLEL", "4")),
            # steps fork from a server that has already imported Dagster and this code: no per-step start-up
            # (dagster_postgres for the production profile; the forkserver skips a module that is not installed)
            "start_method": {"forkserver": {"preload_modules": ["pipelines_dagster.defs.step_preload",
                                                                "dagster_postgres"]}}}))
def infrastructure_pipeline():
    plan, items = orchestrate()
    report(plan, items.map(dispatch).collect())


def report_markdown(result) -> str | None:
    """The report a finished run wrote (the `report` step's markdown metadata), if it got that far."""
    return next((e.event_specific_data.metadata["report"].value for e in result.all_node_events
                 if e.step_key == "report" and e.event_type_value == "STEP_OUTPUT"), None)
