"""`pipelines-dagster` command line. Imports stay lazy: `changes` must start fast and never import Dagster."""

import argparse
import gc
import json
import os
import sys


def _add_changes(sub) -> None:
    p = sub.add_parser("changes", help="list the infrastructure changes between two refs")
    p.add_argument("--repo", required=True, help="path or git URL of infrastructure-live")
    p.add_argument("--base", required=True)
    p.add_argument("--head", required=True)
    p.add_argument("--event", required=True, choices=["pull_request", "push"])
    p.add_argument("--format", default="json", choices=["json", "table"])
    p.set_defaults(func=_cmd_changes)


def _cmd_changes(args, settings) -> int:
    from .core.model import Event
    from .core.orchestrator import detect_changes
    from .integrations.git import GitError, open_git_dir

    try:
        change_set = detect_changes(open_git_dir(args.repo, cache_root=settings.cache_root,
                                                 timeout_s=settings.git_timeout_s),
                                    args.base, args.head, Event(args.event), cache_dir=settings.index_cache or False,
                                    deploy_branch=settings.deploy_branch)
    except GitError as exc:
        print(f"pipelines-dagster: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: say so plainly, keep the output machine-readable
        if settings.debug:
            raise
        message = f"internal error: {type(exc).__name__}: {exc} (PIPELINES_DEBUG=1 shows the traceback)"
        print(f"pipelines-dagster: {message}", file=sys.stderr)
        if args.format == "json":
            sys.stdout.write(change_set_json({"base": args.base, "head": args.head, "event": args.event,
                                              "changes": [], "warnings": [], "errors": [message]}))
        return 1
    if args.format == "json":
        sys.stdout.write(change_set_json(change_set.to_dict()))
    else:
        print(changes_table(change_set))
    return 1 if change_set.errors else 0


def _add_execute(sub) -> None:
    p = sub.add_parser("execute", help="run one unit's action exactly as the pipeline would")
    p.add_argument("--repo", required=True, help="path or git URL of infrastructure-live")
    p.add_argument("--ref", required=True, help="the change's head commit (branch, tag or sha)")
    p.add_argument("--unit", required=True, help="unit path relative to the repository root")
    p.add_argument("--action", required=True, choices=["plan", "apply", "plan-destroy", "destroy"])
    p.add_argument("--event", required=True, choices=["pull_request", "push"])
    p.add_argument("--base", help="base commit; plan-destroy and destroy run from it")
    p.add_argument("--pr", type=int, help="pull request number (for the STS session name)")
    p.add_argument("--deploy-branch", help="deploy branch (default: $PIPELINES_DEPLOY_BRANCH, else .pipelines.yml)")
    p.add_argument("--timeout", type=float, help="seconds for the whole action (default: "
                                                 "$PIPELINES_ACTION_TIMEOUT_S, else 3600)")
    p.add_argument("--format", default="json", choices=["json", "table"])
    p.set_defaults(func=_cmd_execute)


def _cmd_execute(args, settings) -> int:
    from .core.engine_settings import EngineSettings
    from .core.executor import ExecuteRequest, prepare
    from .core.model import Action, Event
    from .core.repo_files import ConfigError, normalize_unit_path
    from .integrations.git import GitError, open_git_dir, resolve

    def usage(message: str) -> int:
        print(f"pipelines-dagster execute: {message}", file=sys.stderr)
        return 2

    action, event = Action(args.action), Event(args.event)
    unit = normalize_unit_path(args.unit)
    if action.is_destroy and not args.base:
        return usage(f"--action {action.value} runs from the base commit: --base is required")
    try:
        repo = open_git_dir(args.repo, cache_root=settings.cache_root, timeout_s=settings.git_timeout_s)
        head = resolve(repo, args.ref)
        base = resolve(repo, args.base) if args.base else None
        prepared = prepare(repo, head, deploy_branch=args.deploy_branch or settings.deploy_branch,
                           settings=EngineSettings.from_settings(
                               settings, **({"timeout_s": args.timeout} if args.timeout else {})),
                           region=settings.aws_region, location=args.repo, audience=settings.oidc_audience)
    except GitError as exc:
        return usage(str(exc))
    except ConfigError as exc:
        print(f"pipelines-dagster execute: {exc}", file=sys.stderr)
        return 1
    for notice in prepared.notices:
        print(f"pipelines-dagster execute: {notice}", file=sys.stderr)
    result = prepared.executor.execute(ExecuteRequest(unit=unit, action=action, event=event, head=head, base=base,
                                                      pr=args.pr))
    if args.format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        print(result_table(result))
    return 0 if result.ok else 1


def _add_unlock(sub) -> None:
    p = sub.add_parser("unlock", help="release a stale state lock of a unit (terraform force-unlock), with the "
                                      "unit's account's apply role, at the deploy branch's head")
    p.add_argument("--repo", required=True, help="path or git URL of infrastructure-live")
    p.add_argument("--unit", required=True, help="unit path relative to the repository root")
    p.add_argument("--lock-id", required=True, help="the lock ID Terraform (or the pipeline's report) gave")
    p.add_argument("--deploy-branch", help="deploy branch (default: $PIPELINES_DEPLOY_BRANCH, else .pipelines.yml)")
    p.add_argument("--format", default="table", choices=["json", "table"])
    p.set_defaults(func=_cmd_unlock)


def _cmd_unlock(args, settings) -> int:
    from .core.engine_settings import EngineSettings
    from .core.executor import prepare
    from .core.repo_files import ConfigError, normalize_unit_path
    from .core.trust import deploy_branch
    from .integrations.git import GitError, open_git_dir, resolve

    try:
        repo = open_git_dir(args.repo, cache_root=settings.cache_root, timeout_s=settings.git_timeout_s)
        branch = deploy_branch(repo, args.deploy_branch or settings.deploy_branch)
        head = resolve(repo, f"refs/heads/{branch}")
        prepared = prepare(repo, head, deploy_branch=branch, settings=EngineSettings.from_settings(settings),
                           region=settings.aws_region, location=args.repo, audience=settings.oidc_audience)
    except GitError as exc:
        print(f"pipelines-dagster unlock: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"pipelines-dagster unlock: {exc}", file=sys.stderr)
        return 1
    for notice in prepared.notices:
        print(f"pipelines-dagster unlock: {notice}", file=sys.stderr)
    result = prepared.executor.force_unlock(normalize_unit_path(args.unit), args.lock_id, head)
    if args.format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        print(result_table(result))
    return 0 if result.ok else 1


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the Dagster job in-process for two refs")
    p.add_argument("--repo", required=True, help="path or git URL of infrastructure-live")
    p.add_argument("--event", required=True, choices=["pull_request", "push"])
    p.add_argument("--base", required=True)
    p.add_argument("--head", required=True)
    p.add_argument("--pr", type=int, default=None)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args, settings) -> int:
    import dagster as dg

    from .definitions import run_in_process
    from .defs.jobs import report_markdown

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    config: dict = {"base_ref": args.base, "head_ref": args.head}
    if args.event == "pull_request":
        config["pr_number"] = args.pr
    elif args.pr is not None:
        print("pipelines-dagster run: --pr is for pull requests (a push's pull request is found on GitHub)",
              file=sys.stderr)
        return 2
    result = run_in_process(args.event, {"ops": {"orchestrate": {"config": config}}}, instance=instance,
                            environment={"PIPELINES_REPO_URL": args.repo},
                            tags={"pipelines/event": args.event, "pipelines/source": "cli"})
    report = report_markdown(result)
    if report is not None:
        print(report)
    else:
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
        print(f"pipelines-dagster run: the run failed before reporting: "
              f"{failure.message if failure else 'see the Dagster run'}", file=sys.stderr)
    print(f"\nDagster run {result.run_id}: {'success' if result.success else 'failure'}", file=sys.stderr)
    return 0 if result.success else 1


def changes_table(change_set) -> str:
    """A core.model.ChangeSet as the `changes` command's table."""
    head = ["wave", "type", "unit", "account", "action", "depends on", "triggers"]
    rows = [[str(c.wave), c.type.value, c.unit or "-", c.account or "-", c.action.value,
             ", ".join(c.depends_on) or "-", ", ".join(c.triggers)] for c in change_set.changes]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    out = [f"{change_set.event.value}: {change_set.base[:12]}..{change_set.head[:12]}, "
           f"{len(change_set.changes)} change(s)"]
    if rows:
        out += [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for label, problems in (("warning", change_set.warnings), ("error", change_set.errors)):
        out += [f"{label}: {p}" for p in problems]
    return "\n".join(out)


def result_table(result) -> str:
    s = result.summary
    rows = [("unit", result.unit), ("action", result.action), ("engine", result.engine),
            ("commit", (result.commit or "")[:12]), ("account", result.account), ("role", result.role_arn),
            ("status", result.status.value), ("summary", s.line()),
            ("exit code", result.exit_code), ("duration", f"{result.duration_s:.1f}s")]
    lines = [f"{k:<10} {v}" for k, v in rows if v is not None]
    lines += [f"  {r.action:<8} {r.address}" for r in s.resources]
    lines += [f"  {o.action:<8} output.{o.address}" for o in s.outputs]
    if result.message:
        lines += ["", result.message]
    if result.output:
        lines += ["", result.output.rstrip()]
    return "\n".join(lines)


def change_set_json(data: dict) -> str:
    """JSON with one change per line: readable, and fast (json's C encoder only runs without indent)."""
    head = ", ".join(f"{json.dumps(k)}: {json.dumps(data[k])}" for k in ("base", "head", "event"))
    changes = ",\n".join("  " + json.dumps(c) for c in data["changes"])
    tail = ",\n ".join(f"{json.dumps(k)}: {json.dumps(data[k], indent=None)}" for k in ("warnings", "errors"))
    body = f"[\n{changes}\n ]" if changes else "[]"
    return f"{{{head},\n \"changes\": {body},\n {tail}}}\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # plugin discovery costs start-up time
    gc.disable()  # a short-lived command that builds many small objects: no cyclic garbage worth collecting
    parser = argparse.ArgumentParser(prog="pipelines-dagster")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_changes(sub)
    _add_run(sub)
    _add_execute(sub)
    _add_unlock(sub)
    args = parser.parse_args(argv)
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"pipelines-dagster: {exc}", file=sys.stderr)
        return 2
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
