"""Sensors: pull requests (or, in local mode, branches of the git remote), the deploy branch, and crashed runs.

Thin: the decisions (what is new, what a run is given, what a crash report says) are in core.run_requests; git refs in
integrations.git; GitHub calls through integrations.github. One factory per sensor, taking the job.

Every tick stays well inside Dagster's 60 s: GitHub calls made by sensors use a short timeout and a retry policy
that never waits long, and work that does not fit the tick budget is left (unrecorded) for the next tick.
"""

import time

import dagster as dg

from ..core import render, run_requests
from ..core.github_updater import Updater
from ..settings import Settings
from .execution import REPORTED, ChangeRunner
from .jobs import JOB_EVENTS, REPORT_STEP
from .resources import GitHub, InfraRepo, apply_lock

DEFAULTS = Settings()


def default_status(settings: Settings) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if settings.sensors_running else dg.DefaultSensorStatus.STOPPED


def _reported(failure_event) -> bool:
    """A failure whose cause the report reports (a failed change's step, or the report's own deliberate one)."""
    data = failure_event.event_specific_data
    failure = getattr(data, "user_failure_data", None) if data is not None else None
    metadata = failure.metadata if failure is not None else {}
    value = metadata.get(REPORTED)
    return bool(getattr(value, "value", value))


def _report_written(instance, run_id: str) -> bool:
    """Whether the run's report step wrote its report (its output)."""
    return any(e.step_key == REPORT_STEP for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT))


def _redacted(text: str) -> str:
    """Skip reasons and logs that can hold a repository location, a git error or a GitHub error: no credentials."""
    from ..redact import default_redactor

    return default_redactor()(text)


def _deploy_head(infra_repo: InfraRepo):
    """(git dir, deploy branch, its head sha), only that branch fetched, or the SkipReason saying why not."""
    from ..core.repo_files import ConfigError
    from ..integrations.git import GitError

    try:
        git_dir, deploy, head = infra_repo.deploy_head()
    except GitError as exc:
        return dg.SkipReason(_redacted(f"git: {exc}"))
    except ConfigError as exc:
        return dg.SkipReason(_redacted(f"configuration: {exc}"))
    if head is None:
        return dg.SkipReason(_redacted(f"the deploy branch {deploy!r} is not in {infra_repo.location}"))
    return git_dir, deploy, head


def _request(run: run_requests.RunWanted) -> dg.RunRequest:
    return dg.RunRequest(run_key=run.run_key, run_config=run.run_config(), tags=dict(run.tags))


# ------------------------------------------------------------------------------------------------ pull requests


def _pull_requests_tick(context, state: dict, github: GitHub, tick_budget_s: float):
    """GitHub's answer alone decides (no git: a pull request's size costs the others nothing); the run starts the
    plan at the merge base of the head and the base branch."""
    from ..integrations.github import GitHubError

    deadline = time.monotonic() + tick_budget_s
    client = github.sensor_client()
    try:
        prs = client.list_open_pull_requests()
    except GitHubError as exc:
        return dg.SkipReason(_redacted(f"GitHub: {exc}"))  # cursor unchanged: the next tick tries again
    by_number = {str(pr.number): pr for pr in prs}
    seen = state.get("prs") or {}
    handled = {n: seen[n] for n in by_number if n in seen}  # closed pull requests drop out
    new = [by_number[n] for n in run_requests.new_heads({n: pr.head_sha for n, pr in by_number.items()}, seen)]
    requests, left = [], 0
    for pr in new:
        if time.monotonic() > deadline:
            left += 1
            continue
        if pr.is_fork:
            updater = Updater(client)
            if not updater.fork_comment(pr):
                context.log.warning(_redacted(f"#{pr.number}: could not explain the missing plan: "
                                              f"{updater.problems[-1]}"))
                continue
            context.log.info(f"#{pr.number} comes from a fork ({pr.head_repo}): no run")
        else:
            requests.append(_request(run_requests.pull_request_run(pr, pr.base_ref)))
        handled[str(pr.number)] = pr.head_sha
    if left:
        context.log.warning(f"{left} pull request(s) left for the next tick (tick budget {tick_budget_s:.0f}s)")
    cursor = run_requests.dump_cursor({**state, "prs": handled})
    if not requests:
        return dg.SensorResult(skip_reason=f"{len(prs)} open pull request(s), no new head", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _branches_tick(context, state: dict, infra_repo: InfraRepo, tick_budget_s: float):
    """Every branch of the remote but the deploy branch is a change request. The heads are listed without fetching;
    each new one is fetched on its own, within the tick's budget: one that does not fit (or times out) is left for
    the next tick, where it goes after the others, so no branch can starve the rest."""
    from ..integrations.git import GitError, fetch, is_ancestor, merge_base, remote_branch_heads

    deadline = time.monotonic() + tick_budget_s
    found = _deploy_head(infra_repo)
    if isinstance(found, dg.SkipReason):
        return found
    git_dir, deploy, deploy_sha = found
    try:
        heads = remote_branch_heads(git_dir, infra_repo.git_timeout_s)
    except GitError as exc:
        return dg.SkipReason(_redacted(f"git: {exc}"))
    heads.pop(deploy, None)
    seen, slow = state.get("branches") or {}, state.get("slow") or {}
    handled = {name: seen[name] for name in heads if name in seen}  # deleted branches drop out
    new = sorted(run_requests.new_heads(heads, seen), key=lambda name: slow.get(name) == heads[name])
    requests, still_slow, left = [], {}, 0
    for name in new:
        sha, remaining = heads[name], deadline - time.monotonic()
        try:
            if remaining < 1:
                raise TimeoutError
            fetch(git_dir, [f"refs/heads/{name}"], min(infra_repo.git_timeout_s, remaining))
        except (GitError, TimeoutError) as exc:
            left += 1
            if isinstance(exc, GitError):
                still_slow[name] = sha
                context.log.warning(_redacted(f"branch {name}: {exc}; tried again after the others"))
            continue
        handled[name] = sha
        if is_ancestor(git_dir, sha, deploy_sha):
            context.log.info(f"branch {name} at {sha[:12]} is already on {deploy}: no run")
            continue
        base = merge_base(git_dir, sha, deploy_sha) or deploy_sha
        requests.append(_request(run_requests.branch_run(name, sha, base, deploy)))
    if left:
        context.log.warning(f"{left} branch(es) left for the next tick (tick budget {tick_budget_s:.0f}s)")
    cursor = run_requests.dump_cursor({**{k: v for k, v in state.items() if k != "slow"}, "branches": handled,
                                **({"slow": still_slow} if still_slow else {})})
    if not requests:
        return dg.SensorResult(skip_reason=f"{len(heads)} branch(es) besides {deploy}, no new head", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def make_pull_request_sensor(job, settings: Settings = DEFAULTS,
                             name: str = "pull_request_sensor") -> dg.SensorDefinition:
    @dg.sensor(name=name, job=job, minimum_interval_seconds=settings.sensor_interval_s,
               default_status=default_status(settings),
               description="A plan run for every new head of an open pull request (GitHub), or of a branch other "
                           "than the deploy branch (local mode). Forks get a comment instead of a run.")
    def pull_request_sensor(context: dg.SensorEvaluationContext, infra_repo: dg.ResourceParam[InfraRepo],
                            github: dg.ResourceParam[GitHub]):
        state = run_requests.load_cursor(context.cursor)
        if github.local_mode:
            return _branches_tick(context, state, infra_repo, settings.sensor_tick_budget_s)
        return _pull_requests_tick(context, state, github, settings.sensor_tick_budget_s)

    return pull_request_sensor


# ------------------------------------------------------------------------------------------------ deploy branch


def make_deploy_branch_sensor(job, settings: Settings = DEFAULTS,
                              name: str = "deploy_branch_sensor") -> dg.SensorDefinition:
    @dg.sensor(name=name, job=job, minimum_interval_seconds=settings.sensor_interval_s,
               default_status=default_status(settings),
               description="An apply run for every new commit on the deploy branch, in order, each from the "
                           "previous one; applies to one repository never overlap (run-queue tag limit).")
    def deploy_branch_sensor(context: dg.SensorEvaluationContext, infra_repo: dg.ResourceParam[InfraRepo],
                             github: dg.ResourceParam[GitHub]):
        from ..integrations.git import first_parent_commits, fork_point, has_commit, is_ancestor

        found = _deploy_head(infra_repo)
        if isinstance(found, dg.SkipReason):
            return found
        git_dir, deploy, head = found
        state = run_requests.load_cursor(context.cursor)
        last = state.get("sha") if state.get("branch") == deploy else None
        record = run_requests.dump_cursor({"branch": deploy, "sha": head})
        if not last:  # first look (or a new deploy branch): history is not applied
            return dg.SensorResult(skip_reason=f"recorded {deploy} at {head[:12]}; later commits will be applied",
                                   cursor=record)
        if last == head:
            return dg.SkipReason(f"{deploy} is still at {head[:12]}")
        if not has_commit(git_dir, last):
            context.log.error(f"the last applied commit {last} is gone from {deploy}; recording {head[:12]} without "
                              "applying: apply by hand from the Launchpad if needed")
            return dg.SensorResult(skip_reason=f"last applied commit {last[:12]} unknown", cursor=record)
        replaced = None
        if not is_ancestor(git_dir, last, head):  # rewritten: apply from where the histories part, report it
            replaced, last = last, fork_point(git_dir, last, head)
            if last is None:
                context.log.error(f"{deploy} was rewritten: {replaced[:12]} and {head[:12]} share no history; "
                                  f"recording {head[:12]} without applying")
                return dg.SensorResult(skip_reason=f"{deploy} rewritten without shared history", cursor=record)
            context.log.warning(f"{deploy} was rewritten ({replaced[:12]} is no longer in its history): one run "
                                f"from {last[:12]}, where the histories part, to {head[:12]}")
            commits = [head]
        else:
            commits = first_parent_commits(git_dir, last, head)
        batch = commits[:settings.max_push_runs_per_tick]
        if len(commits) > len(batch):
            context.log.info(f"{len(commits) - len(batch)} more commit(s) of {deploy} go in the next tick")
        runs = run_requests.push_runs(last, batch, apply_lock(github, infra_repo), replaced)
        return dg.SensorResult(run_requests=[_request(r) for r in runs],
                               cursor=run_requests.dump_cursor({"branch": deploy, "sha": batch[-1]}))

    return deploy_branch_sensor


# ------------------------------------------------------------------------------------------------ crashed runs


def _error_text(error) -> str:
    """The message of a serialized error and of its causes (no stack: it goes to a PR comment)."""
    parts, seen = [], 0
    while error is not None and seen < 5:
        parts.append((error.message or "").strip())
        error, seen = error.cause or getattr(error, "context", None), seen + 1
    return "\n\ncaused by: ".join(p for p in parts if p) or "unknown error"


def make_run_failure_sensor(jobs: list, settings: Settings = DEFAULTS,
                            name: str = "run_failure_sensor") -> dg.SensorDefinition:
    @dg.run_failure_sensor(name=name, monitored_jobs=jobs, minimum_interval_seconds=settings.sensor_interval_s,
                           default_status=default_status(settings),
                           description="Reports runs that failed before reporting (a crash outside dispatch) to "
                                       "their pull request, or as an issue for deploy-branch runs.")
    def run_failure_sensor(context: dg.RunFailureSensorContext, github: dg.ResourceParam[GitHub],
                           changes: dg.ResourceParam[ChangeRunner]):
        from ..redact import default_redactor

        run = context.dagster_run
        failures = context.get_step_failure_events()
        if _report_written(context.instance, run.run_id) and run_requests.already_reported(
                [_reported(e) for e in failures]):
            context.log.info(f"run {run.run_id}: failed after reporting; nothing to add")
            return
        errors: list[tuple[str | None, str]] = [
            (e.step_key, _error_text(e.step_failure_data.error)) for e in failures
            if e.event_specific_data is not None and e.step_failure_data.error is not None]
        if not errors:
            errors = [("run", context.failure_event.message or "the run failed")]
        event = JOB_EVENTS.get(run.job_name)
        target = run_requests.crash_target(event.value if event else None, run.tags, run.run_config)
        body = render.crash_report(run_id=run.run_id, run_url=changes.run_url(run.run_id), target=target,
                                   errors=errors, redact=default_redactor())
        if github.local_mode:
            context.log.error(f"run {run.run_id} crashed before reporting:\n{body}")
            return
        updater = Updater(github.sensor_client())
        said = updater.crash(target, body, changes.run_url(run.run_id))
        (context.log.error if updater.problems or target.sha is None else context.log.info)(
            _redacted(f"run {run.run_id} crashed: {said}" + "".join(f"; {p}" for p in updater.problems)))

    return run_failure_sensor


# ------------------------------------------------------------------------------------------------ asset graph


def reload_code_location(ui_url: str, location_name: str, timeout_s: int = 45) -> str | None:
    """Ask the Dagster webserver to reload a code location (GraphQL `reloadRepositoryLocation`, through
    dagster-graphql's client); None when it reloaded, else what went wrong."""
    from urllib.parse import urlsplit

    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError, ReloadRepositoryLocationStatus

    url = urlsplit(ui_url)
    try:
        client = DagsterGraphQLClient(url.hostname or "localhost", port_number=url.port,
                                      use_https=url.scheme == "https", timeout=timeout_s,
                                      path_prefix=url.path.rstrip("/"))
        info = client.reload_repository_location(location_name)
    except (DagsterGraphQLClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if info.status is ReloadRepositoryLocationStatus.SUCCESS:
        return None
    return f"{info.failure_type}: {info.message}"


def make_asset_graph_sensor(lineage, location_name: str, settings: Settings = DEFAULTS,
                            name: str = "asset_graph_sensor") -> dg.SensorDefinition:
    """`lineage` is the core.lineage.Lineage this code location's asset graph was built from."""

    ui_url = settings.ui_url

    @dg.sensor(name=name, minimum_interval_seconds=settings.sensor_interval_s, default_status=default_status(settings),
               description="Keeps the asset graph at the deploy-branch head: when the branch has moved, reloads "
                           "this code location through the Dagster webserver (PIPELINES_UI_URL).")
    def asset_graph_sensor(context: dg.SensorEvaluationContext, infra_repo: dg.ResourceParam[InfraRepo]):
        if not lineage.location:
            return dg.SkipReason("PIPELINES_REPO_URL is not set: no asset graph to keep up to date")
        found = _deploy_head(infra_repo)
        if isinstance(found, dg.SkipReason):
            return found
        _, deploy, head = found
        if head == lineage.commit:
            return dg.SkipReason(f"the asset graph is at {deploy} {head[:12]}")
        was = lineage.commit[:12] if lineage.commit else "nothing"
        if not ui_url:
            context.log.warning(f"{deploy} is at {head[:12]}, the asset graph at {was}: set PIPELINES_UI_URL so "
                                f"that this sensor can reload code location {location_name}, or reload it in the UI")
            return dg.SkipReason(f"{deploy} moved to {head[:12]}; PIPELINES_UI_URL is not set, no reload")
        problem = reload_code_location(ui_url, location_name)
        problem = problem and _redacted(problem)  # the UI's URL may carry credentials
        if problem:
            context.log.warning(f"reloading code location {location_name} failed (next tick tries again): {problem}")
            return dg.SkipReason(f"{deploy} moved to {head[:12]}; reload failed: {problem}")
        return dg.SkipReason(f"{deploy} moved from {was} to {head[:12]}: code location {location_name} reloaded")

    return asset_graph_sensor
