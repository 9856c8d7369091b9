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


def _cmd_changes(args) -> int:
    from .core.model import Event
    from .core.orchestrator import detect_changes
    from .core.report import changes_table
    from .integrations.git import GitError, open_git_dir

    try:
        change_set = detect_changes(open_git_dir(args.repo), args.base, args.head, Event(args.event))
    except GitError as exc:
        print(f"pipelines-dagster: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: say so plainly, keep the output machine-readable
        if os.environ.get("PIPELINES_DEBUG"):
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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
