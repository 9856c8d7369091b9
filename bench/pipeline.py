"""Job overhead: the Dagster job planning 20 changed null-resource units vs the same `terraform` commands run
directly, with the same parallelism, in the same run. Prints the ratio (target at most 1.5x) and the GitHub
requests per run (the job reports to the GitHub fake, so the count is real).

    .venv/bin/python bench/pipeline.py [--units 20] [--parallel 4] [--rounds 2]

The job runs as deployed: `dagster job execute` on a DAGSTER_HOME instance with the multiprocess executor
(each dispatch step in its own process, `max_concurrent` = parallel), orchestrate and report steps included.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_executor", ROOT / "bench" / "executor.py")
bx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bx)

from pipelines_dagster.core.engine import NON_INTERACTIVE_ENV  # noqa: E402
from pipelines_dagster.demo.terraform import install_null_provider, write_cli_config  # noqa: E402
from tests.fakes.github_fake import GitHubFake  # noqa: E402

GH_REPO = "acme/infrastructure-live"


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def run_job(env: dict, home: Path, base: str, head: str, pr: int) -> tuple[float, float]:
    config = home / "run.yaml"
    config.write_text(json.dumps({
        "ops": {"orchestrate": {"config": {"event": "pull_request", "base_ref": base, "head_ref": head,
                                           "pr_number": pr}}},
    }))
    started = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m",
                           "pipelines_dagster.definitions", "-j", "infrastructure_pipeline", "-c", str(config)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    (home / "last-run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or "RUN_SUCCESS" not in proc.stdout + proc.stderr:
        raise SystemExit(f"job failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed, run_duration(home)


def run_duration(home: Path) -> float:
    """The latest run's own duration (start to end events), without the `dagster job execute` start-up."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        stats = instance.get_run_stats(run.run_id)
        return stats.end_time - stats.start_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--resources", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tf = bx.terraform_binary()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name, GitHubFake() as fake:
        tmp = Path(os.environ.get("BENCH_KEEP") or tmp_name)
        plugin_dir = install_null_provider(tmp / "plugins")
        cli_config = write_cli_config(tmp / "terraformrc")
        live = tmp / "live"
        live.mkdir()
        git(live, "init", "-q", "-b", "main")
        git(live, "commit", "-q", "--allow-empty", "-m", "base")
        base = git(live, "rev-parse", "HEAD")
        git(live, "checkout", "-q", "-b", "feature")
        units = [f"units/u{i:02d}" for i in range(args.units)]
        for i, unit in enumerate(units):
            (live / unit).mkdir(parents=True)
            (live / unit / "main.tf").write_text(bx.unit_tf(args.resources, i))
        git(live, "add", "-A")
        git(live, "commit", "-q", "-m", "units")
        head = git(live, "rev-parse", "HEAD")
        fake.add_repo(GH_REPO)
        pr = fake.add_pull_request(GH_REPO, "feature", head_sha=head)
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINES_REPO_URL": str(live),
               "PIPELINES_TF_PLUGIN_DIR": str(plugin_dir), "TF_CLI_CONFIG_FILE": str(cli_config),
               "PIPELINES_CACHE_DIR": str(tmp / "cache"), "PIPELINES_MAX_PARALLEL": str(args.parallel),
               "PIPELINES_GITHUB_REPO": GH_REPO, "GITHUB_API_URL": fake.url, "GITHUB_TOKEN": fake.token,
               "PATH": f"{Path(tf).parent}:{os.environ['PATH']}"}
        direct_env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), **NON_INTERACTIVE_ENV}
        direct, job, in_run, requests = [], [], [], []
        for round_no in range(args.rounds):
            copies = tmp / f"direct-{round_no}"
            dirs = []
            for unit in units:
                shutil.copytree(live / unit, copies / unit)
                dirs.append(copies / unit)
            fake.clear_log()
            wall, own = run_job(env, home, base, head, pr)
            job.append(wall)
            in_run.append(own)
            requests.append((len(fake.log), len(fake.writes())))
            direct.append(bx.run_direct(dirs, tf, plugin_dir, direct_env, args.parallel))
            print(f"round {round_no}: direct {direct[-1]:.2f} s, job {job[-1]:.2f} s (run itself {in_run[-1]:.2f} s), "
                  f"ratio {job[-1] / direct[-1]:.2f}x ({in_run[-1] / direct[-1]:.2f}x), GitHub requests {requests[-1][0]} "
                  f"({requests[-1][1]} writes)", flush=True)
        print(f"\n{args.units} units, parallel {args.parallel}: direct best {min(direct):.2f} s, "
              f"job best {min(job):.2f} s, ratio {min(job) / min(direct):.2f}x; the run itself "
              f"{min(in_run):.2f} s, ratio {min(in_run) / min(direct):.2f}x (target <= 1.5x); "
              f"GitHub requests per run {max(r for r, _ in requests)}, writes {max(w for _, w in requests)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
