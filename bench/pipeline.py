"""Job overhead: the Dagster job planning 20 changed null-resource units (one `plan[...]` step per change) vs the
same `terraform` commands run directly, with the same parallelism, rounds alternating. Prints the ratio (target at
most 1.6x), the CPU time of both (the job's whole process tree: its steps, Terraform, Dagster's log capture),
where the run's time goes, and the GitHub requests per run (the job reports to the GitHub fake, so the count is
real).

    .venv/bin/python bench/pipeline.py [--units 20] [--resources 10] [--parallel 4] [--rounds 3]
                                       [--instance sqlite|postgres|both]

The job runs as deployed: `dagster job execute` on a DAGSTER_HOME instance, the job as the code location builds
it from the PIPELINES_* settings (the multiprocess executor: each step in its own process, PIPELINES_MAX_PARALLEL
change steps at a time), orchestrate, the wave_N stages and report included. Two instances by default: the
embedded default (SQLite) and the production profile's storage (PostgreSQL, a throwaway server with its default,
durable settings; tests/postgres.py). The machine's load average is printed with the figures: on a shared
machine, the ratios move with it.
"""

import argparse
import ctypes
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_executor", ROOT / "bench" / "executor.py")
bx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bx)

from pipelines_dagster.core.engine import NON_INTERACTIVE_ENV  # noqa: E402
from pipelines_dagster.demo.terraform import install_null_provider, write_cli_config  # noqa: E402
from tests.fakes.github_fake import GitHubFake  # noqa: E402

GH_REPO = "acme/infrastructure-live"
JOB = "infrastructure_plan"
TARGET = 1.6


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def children_cpu() -> float:
    """CPU seconds (user and system) of this process's finished descendants, waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_orphans(timeout_s: float = 10.0) -> None:
    """Waits for the descendants that outlived their parent (the executor's forkserver), so that their CPU counts:
    this process is their subreaper."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def run_job(env: dict, home: Path, base: str, head: str, pr: int) -> float:
    config = home / "run.yaml"
    config.write_text(json.dumps({
        "ops": {"orchestrate": {"config": {"base_ref": base, "head_ref": head,
                                           "pr_number": pr}}},
    }))
    started = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m",
                           "pipelines_dagster.definitions", "-j", JOB, "-c", str(config)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    reap_orphans()
    (home / "last-run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or "RUN_SUCCESS" not in proc.stdout + proc.stderr:
        raise SystemExit(f"job failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed


def run_profile(home: Path) -> dict[str, float | int]:
    """Where the latest run's time went, from its event log: start-up before `orchestrate`, `orchestrate`, the
    change steps (the wait for a step's process and the step itself, mean), `report`, from the last change step's
    end to the run's end, and how many steps were skipped without a process (a push's stages)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        stats = instance.get_run_stats(run.run_id)
        steps: dict[str, dict[str, float]] = {}
        for record in instance.all_logs(run.run_id):
            if record.step_key and record.dagster_event:
                steps.setdefault(record.step_key, {}).setdefault(record.dagster_event.event_type_value,
                                                                 record.timestamp)
    changes = {k: v for k, v in steps.items() if k.startswith(("plan[", "apply_wave_"))}
    return {"run": stats.end_time - stats.start_time,
            "start-up": steps["orchestrate"]["STEP_START"] - stats.start_time,
            "orchestrate": steps["orchestrate"]["STEP_SUCCESS"] - steps["orchestrate"]["STEP_START"],
            "step process": statistics.mean(v["STEP_START"] - v["STEP_WORKER_STARTING"] for v in changes.values()),
            "change step": statistics.mean(v["STEP_SUCCESS"] - v["STEP_START"] for v in changes.values()),
            "report": steps["report"]["STEP_SUCCESS"] - steps["report"]["STEP_WORKER_STARTING"],
            "after the last change": stats.end_time - max(v["STEP_SUCCESS"] for v in changes.values()),
            "skipped steps": sum("STEP_SKIPPED" in v for v in steps.values())}


def instance_homes(tmp: Path, which: str, stack: ExitStack) -> dict[str, tuple[Path, dict]]:
    """DAGSTER_HOME folders (and their extra environment) of the instances measured: `sqlite`, the embedded
    default (the repository's dagster.yaml), and `postgres`, the production profile's storage (deploy/dagster.yaml's
    `storage`, on a throwaway PostgreSQL server with its default, durable settings)."""
    homes = {}
    for name in ("sqlite", "postgres") if which == "both" else (which,):
        home = tmp / f"dagster_home_{name}"
        home.mkdir()
        config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        extra: dict[str, str] = {}
        if name == "postgres":
            from tests.postgres import postgres_server

            server = stack.enter_context(postgres_server(durable=True))
            server.create_database("bench")
            config["storage"] = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["storage"]
            extra = {"DAGSTER_PG_HOST": server.host, "DAGSTER_PG_PORT": str(server.port), "DAGSTER_PG_DB": "bench",
                     "DAGSTER_PG_USERNAME": server.user, "DAGSTER_PG_PASSWORD": server.password}
            os.environ.update(extra)  # this process reads the runs' event logs too
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        homes[name] = home, extra
    return homes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--resources", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instance", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    tf = bx.terraform_binary()
    ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the step processes' CPU counts
    with ExitStack() as stack:
        tmp = Path(os.environ.get("BENCH_KEEP") or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
        fake = stack.enter_context(GitHubFake())
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
        base_env = {**os.environ, "PIPELINES_REPO_URL": str(live),
                    "PIPELINES_TF_PLUGIN_DIR": str(plugin_dir), "TF_CLI_CONFIG_FILE": str(cli_config),
                    "PIPELINES_CACHE_DIR": str(tmp / "cache"), "PIPELINES_MAX_PARALLEL": str(args.parallel),
                    "PIPELINES_GITHUB_REPO": GH_REPO, "GITHUB_API_URL": fake.url, "GITHUB_TOKEN": fake.token,
                    "PATH": f"{Path(tf).parent}:{os.environ['PATH']}"}
        direct_env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), **NON_INTERACTIVE_ENV}
        print(f"load average at start {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)", flush=True)
        for name, (home, extra) in instance_homes(tmp, args.instance, stack).items():
            env = {**base_env, **extra, "DAGSTER_HOME": str(home)}
            direct, job, in_run, requests, profiles, cpu = [], [], [], [], [], []
            print(f"\n{name} instance", flush=True)
            for round_no in range(args.rounds):
                copies = tmp / f"direct-{name}-{round_no}"
                dirs = []
                for unit in units:
                    shutil.copytree(live / unit, copies / unit)
                    dirs.append(copies / unit)
                fake.clear_log()
                cpu_before = children_cpu()
                job.append(run_job(env, home, base, head, pr))
                cpu_job = children_cpu() - cpu_before
                profiles.append(run_profile(home))
                in_run.append(profiles[-1]["run"])
                requests.append((len(fake.log), len(fake.writes())))
                cpu_before = children_cpu()
                direct.append(bx.run_direct(dirs, tf, plugin_dir, direct_env, args.parallel))
                cpu.append((cpu_job, children_cpu() - cpu_before))
                print(f"round {round_no}: direct {direct[-1]:.2f} s, job {job[-1]:.2f} s (run itself "
                      f"{in_run[-1]:.2f} s), ratio {job[-1] / direct[-1]:.2f}x ({in_run[-1] / direct[-1]:.2f}x); "
                      f"CPU job {cpu[-1][0]:.1f} s, direct {cpu[-1][1]:.1f} s; GitHub requests {requests[-1][0]} "
                      f"({requests[-1][1]} writes); load {os.getloadavg()[0]:.1f}", flush=True)
            ratios = [r / d for r, d in zip(in_run, direct, strict=True)]
            best = min(range(args.rounds), key=ratios.__getitem__)
            profile = profiles[best]
            print(f"{name}: {args.units} units, parallel {args.parallel}: the run itself / direct: "
                  f"best round {ratios[best]:.2f}x ({in_run[best]:.2f} s / {direct[best]:.2f} s), "
                  f"median {statistics.median(ratios):.2f}x, rounds "
                  f"{min(ratios):.2f}-{max(ratios):.2f}x (target <= {TARGET}x); with `dagster job execute`'s "
                  f"start-up {job[best] / direct[best]:.2f}x; CPU (job's process tree, all rounds) "
                  f"{sum(c for c, _ in cpu) / sum(d for _, d in cpu):.2f}x the direct commands'; GitHub requests "
                  f"per run {max(r for r, _ in requests)}, writes {max(w for _, w in requests)}")
            print("where the run's time goes (best round): " + ", ".join(
                f"{k} {v:.2f} s" if isinstance(v, float) else f"{k}: {v}"
                for k, v in profile.items() if k != "run"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
