"""The code location at scale: what the code server does when it loads (import, definitions from the deploy
branch's lineage, jobs, the repository snapshot the webserver reads), cold (empty cache) and warm, and what each
step process of a plan or apply run pays to rebuild its job from what the code server recorded. Repositories of
the scale layout (bench/layout.py), 20 and 10,000 units by default; each figure from a fresh process, best of
--repeat.

    .venv/bin/python bench/location.py [--units 20 10000] [--repeat 3] [--work DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.layout import generate  # noqa: E402

# the code server's load, in a fresh process: phases in seconds, and the recorded load data for the steps
LOAD = """
import json, os, sys, time
t0 = time.perf_counter()
import dagster
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.reconstruct import initialize_repository_def_from_pointer
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
import pipelines_dagster.definitions
t1 = time.perf_counter()
repo = initialize_repository_def_from_pointer(ModuleCodePointer("pipelines_dagster.definitions", "defs", os.getcwd()))
t2 = time.perf_counter()
repo.get_all_jobs()
t3 = time.perf_counter()
RepositorySnap.from_def(repo, defer_snapshots=True)
t4 = time.perf_counter()
open(sys.argv[1], "w").write(serialize_value(repo.repository_load_data))
print(json.dumps({"import": t1 - t0, "definitions": t2 - t1, "jobs": t3 - t2, "snapshot": t4 - t3,
                  "units": len(repo.asset_graph.get_all_asset_keys())}))
"""

# a step process: forked from a process that imported step_preload (the forkserver's), it rebuilds its job
STEP = """
import json, os, sys, time
import pipelines_dagster.step_preload
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._serdes import deserialize_value
data = deserialize_value(open(sys.argv[1]).read())
pointer = ModuleCodePointer("pipelines_dagster.definitions", "defs", os.getcwd())
figures = {}
for job in ("infrastructure_plan", "infrastructure_apply"):
    pid = os.fork()
    if pid == 0:
        c0 = time.process_time()
        ReconstructableRepository(pointer, repository_load_data=data).get_reconstructable_job(job).get_definition()
        os.write(1, json.dumps({job: time.process_time() - c0}).encode() + b"\\n")
        os._exit(0)
    os.waitpid(pid, 0)
"""


def python(code: str, env: dict, *args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def best(runs: list[dict]) -> dict:
    return {k: min(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, nargs="+", default=[20, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-location-"))
    print(f"load average at start {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs); seconds, best of {args.repeat}")
    print(f"{'units':>6} {'cache':>5} {'import':>7} {'definitions':>11} {'jobs':>6} {'snapshot':>8} {'total':>7}"
          f" {'plan step':>9} {'apply step':>10}")
    for units in args.units:
        repo = work / f"live-{units}"
        if not repo.exists():
            generate(repo, units)
        cache = work / f"cache-{units}"
        load_data = work / f"load-{units}.json"
        env = {**os.environ, "PIPELINES_REPO_URL": str(repo), "PIPELINES_CACHE_DIR": str(cache),
               "DAGSTER_HOME": str(work), "PYTHONWARNINGS": "ignore"}
        for label in ("cold", "warm"):
            runs = []
            for _ in range(args.repeat):
                if label == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                runs += python(LOAD, env, str(load_data))
            load = best(runs)
            steps = best([{k: v for r in python(STEP, env, str(load_data)) for k, v in r.items()}
                          for _ in range(args.repeat)]) if label == "warm" else {}
            total = load["import"] + load["definitions"] + load["jobs"] + load["snapshot"]
            print(f"{units:>6} {label:>5} {load['import']:>7.2f} {load['definitions']:>11.2f} {load['jobs']:>6.2f} "
                  f"{load['snapshot']:>8.2f} {total:>7.2f}"
                  + (f" {steps['infrastructure_plan']:>9.3f} {steps['infrastructure_apply']:>10.3f}" if steps else ""),
                  flush=True)
    print("import, definitions: the `dagster definitions validate` and code-server load; jobs, snapshot: what the "
          "code server builds for the webserver; plan/apply step: CPU seconds a step process spends rebuilding its "
          "job (after the forkserver's preload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
