"""Change detection in a child process, bounded in time and memory as a whole.

Detection reads files that anyone who can push a branch writes. Each of its steps is bounded (terragrunt/*.py,
the YAML loader, symlinks); this bounds the whole run: the child (`python -m
pipelines_dagster.core.detection_process`, which never imports Dagster, so it starts in a fraction of a second)
cannot allocate more than the memory limit (RLIMIT_AS), and is killed with its process group when the time limit
passes. Either way, and when it crashes, the caller gets a ChangeSet whose errors say so instead of a hung or
failed run.

The parent sends its arguments pickled (it is the trusted side, and any keyword argument passes); the child answers
in JSON: the ChangeSet as pydantic dumps it (the command line's JSON contract is ChangeSet.to_dict, not this).
"""

import errno
import json
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
from pathlib import Path

from ..integrations import git as gitio
from .model import ChangeSet, Event, Problem
from .orchestrator import detect_changes

TIMEOUT_S = 600.0  # the deployment's are PIPELINES_DETECT_TIMEOUT_S and PIPELINES_DETECT_MEMORY_MB (settings)
MEMORY_MB = 4096
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the child imports this very package


def detect_changes_bounded(repo, base_ref: str, head_ref: str, event: Event, *, timeout_s: float | None = None,
                           memory_mb: int | None = None, **kwargs) -> ChangeSet:
    """`detect_changes(repo, base_ref, head_ref, event, **kwargs)` in a child process that may use at most
    `memory_mb` MiB of address space and `timeout_s` seconds. An unknown ref raises GitError, as in-process
    detection does."""
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    memory_mb = MEMORY_MB if memory_mb is None else memory_mb
    git_dir = str(getattr(repo, "git_dir", repo))
    request = pickle.dumps({"repo": git_dir, "base": base_ref, "head": head_ref, "event": event, "kwargs": kwargs,
                            "memory_mb": memory_mb, "timeout_s": timeout_s})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(request, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return _failed(git_dir, base_ref, head_ref, event,
                       f"change detection did not finish within {timeout_s:g} s (PIPELINES_DETECT_TIMEOUT_S): "
                       "nothing is planned or applied")
    except BaseException:
        _kill_group(proc)
        raise
    try:
        answer = json.loads(out) if proc.returncode == 0 else {}
    except ValueError:
        answer = {}
    if "change_set" in answer:
        return ChangeSet.model_validate(answer["change_set"])
    if "git_error" in answer:
        raise gitio.GitError(answer["git_error"])
    stderr = err.decode("utf-8", "replace").strip()
    if answer.get("out_of_memory") or "MemoryError" in stderr:
        message = f"change detection ran out of memory (limit {memory_mb} MiB, PIPELINES_DETECT_MEMORY_MB)"
    elif "crashed" in answer:
        message = f"change detection crashed: {answer['crashed']}"
    elif proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        message = f"change detection was killed by {name}" + (
            f", probably out of memory (limit {memory_mb} MiB, PIPELINES_DETECT_MEMORY_MB): native code fails so "
            "at the limit" if name in ("SIGSEGV", "SIGBUS", "SIGABRT") else "")
    else:
        last = stderr.splitlines()[-1] if stderr else f"exit code {proc.returncode}"
        message = f"change detection crashed: {last[:500]}"
    return _failed(git_dir, base_ref, head_ref, event, message + ": nothing is planned or applied")


def _kill_group(proc: subprocess.Popen) -> None:
    """The child and whatever it started (git): they share its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _failed(git_dir: str, base_ref: str, head_ref: str, event: Event, message: str) -> ChangeSet:
    def sha(ref: str) -> str:
        try:
            return gitio.resolve(git_dir, ref)
        except gitio.GitError:
            return ref
    return ChangeSet(base=sha(base_ref), head=sha(head_ref), event=event, errors=[Problem(file=None, message=message)])


# ---- the child ----------------------------------------------------------------------------------------------------

def _child() -> None:
    request = pickle.loads(sys.stdin.buffer.read())
    limit = request["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    signal.alarm(math.ceil(request["timeout_s"]) + 10)  # never outlives the parent's limit, even orphaned
    try:
        change_set = detect_changes(request["repo"], request["base"], request["head"], request["event"],
                                    **request["kwargs"])
        answer: dict[str, object] = {"change_set": change_set.model_dump(mode="json")}
    except gitio.GitError as exc:
        answer = {"git_error": str(exc)}
    except MemoryError:
        answer = {"out_of_memory": True}
    except OSError as exc:  # ENOMEM: no memory left to start git
        answer = {"out_of_memory": True} if exc.errno == errno.ENOMEM else {"crashed": f"OSError: {exc}"}
    except Exception as exc:  # a bug of ours: the parent reports it as an error of the run
        answer = {"crashed": f"{type(exc).__name__}: {str(exc)[:500]}"}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    _child()
