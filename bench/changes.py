"""Change-detection speed on generated Terragrunt repositories of 1,000 and 10,000 units.

The repositories have the scale layout (bench/layout.py). For a one-unit change, an _envcommon change and a
root.hcl change, prints in one run: `git diff --name-only` for the same refs (the floor), cold detection (empty
cache), warm detection (cache filled, new Orchestrator, same process; best of 5) and the wall time of the
`pipelines-dagster changes` command (a new process), cold (its cache empty) and warm (best of 5). This machine is
shared and noisy: best-of figures are the repeatable ones.

    .venv/bin/python bench/changes.py [--units 1000 10000] [--work DIR]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import git  # noqa: E402

from bench.layout import generate  # noqa: E402
from pipelines_dagster.core.model import Event  # noqa: E402
from pipelines_dagster.core.orchestrator import Orchestrator  # noqa: E402


def run(cwd: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def branch_with(path: Path, name: str, rel: str) -> None:
    run(path, "git", "checkout", "-q", "-b", name, "main")
    with open(path / rel, "a") as fh:
        fh.write("\n# changed\n")
    run(path, "git", "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-q", "-am", name)
    run(path, "git", "checkout", "-q", "main")


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bench(units: int, work: Path) -> None:
    repo_path = work / f"live-{units}"
    if not repo_path.exists():
        print(f"generating {units} units ...", flush=True)
        generate(repo_path, units)
    first_unit = run(repo_path, "git", "ls-files", "*/svc0/app/terragrunt.hcl").split()[0]
    cases = {"one unit": first_unit, "_envcommon": "_envcommon/database.hcl", "root.hcl": "root.hcl"}
    for i, rel in enumerate(cases.values()):
        if not run(repo_path, "git", "branch", "--list", f"case{i}").strip():
            branch_with(repo_path, f"case{i}", rel)
    repo = git.Repo(repo_path)
    cli = [str(Path(sys.executable).with_name("pipelines-dagster"))]
    if not os.path.exists(cli[0]):
        cli = [sys.executable, "-m", "pipelines_dagster.cli"]
    print(f"\n{units} units  (seconds; ratio = detection / git diff)")
    print(f"{'change':<12} {'affected':>8} {'git diff':>9} {'cold':>8} {'warm':>8} {'cli cold':>9} "
          f"{'cli warm':>9} {'warm/diff':>10} {'cli-warm':>9}")
    for i, label in enumerate(cases):
        head = f"case{i}"
        diff_s, _ = timed(lambda head=head: run(repo_path, "git", "diff", "--name-only", "main", head))
        cache = work / f"cache-{units}-{i}"
        shutil.rmtree(cache, ignore_errors=True)

        def detect(cache=cache, head=head):
            return Orchestrator(repo, cache).detect("main", head, Event.PULL_REQUEST)

        cold_s, result = timed(detect)
        warm_runs = [timed(detect) for _ in range(5)]
        warm_s = min(t for t, _ in warm_runs)
        assert all(w.to_dict() == result.to_dict() for _, w in warm_runs)
        cli_cache = work / f"cli-cache-{units}-{i}"
        shutil.rmtree(cli_cache, ignore_errors=True)
        env = dict(os.environ, PIPELINES_CACHE_DIR=str(cli_cache))
        # the command's own disk cache, empty, then filled
        cli_cold_s, _ = timed(lambda env=env, head=head: subprocess.run(
            cli + ["changes", "--repo", str(repo_path), "--base", "main", "--head", head, "--event", "pull_request"],
            env=env, capture_output=True, check=True))
        cli_s = min(timed(lambda env=env, head=head: subprocess.run(
            cli + ["changes", "--repo", str(repo_path), "--base", "main", "--head", head, "--event", "pull_request"],
            env=env, capture_output=True, check=True))[0] for _ in range(5))
        print(f"{label:<12} {len(result.changes):>8} {diff_s:>9.3f} {cold_s:>8.3f} {warm_s:>8.3f} {cli_cold_s:>9.3f} "
              f"{cli_s:>9.3f} "
              f"{warm_s / diff_s:>10.1f} {cli_s - warm_s:>9.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pipelines-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}")
    for units in args.units:
        bench(units, work)


if __name__ == "__main__":
    main()
