"""The production profile for real: the instance of deploy/dagster.yaml (Postgres storage, run queue with the
pipeline's tag limits, run monitoring, run retries, compute logs in S3, here the moto server) with Dagster's
default run launcher in place of Kubernetes; the two code locations (plan, apply) each served by `dagster api grpc`
with the Helm values' arguments and environment (as the chart's user deployments run them), `dagster-webserver` and
`dagster-daemon` as separate processes (each in its own session, stopped by process group). The plan job is
launched over GraphQL; the apply location's deploy-branch sensor starts apply runs; the daemon is killed while an
apply waits in the queue and more work waits for the sensor, then restarted; runs, events, each run's origin (its
code location's container context, which names the run pod's service account on Kubernetes) and the sensor cursor
are read from Postgres."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest
import yaml
from dagster import DagsterEventType

from tests.dagsterui import LAUNCH, WORKSPACE_QUERY, GraphQL, free_port, run_logs
from tests.e2e.test_dagster_dev import UNIT, infra  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
PLAN, APPLY = "pipelines-plan", "pipelines-apply"  # the code locations
BUCKET = "dagster-compute-logs"
DONE = ("SUCCESS", "FAILURE", "CANCELED")
# About 50-80 s on a quiet 2-core machine, up to about 170 s when other work shares it; the bound only keeps a
# stuck run from hanging the suite.
DEADLINE_S = 360

START_SENSOR = """
mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } ... on Error { message } } }
"""


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def code_locations() -> dict[str, dict]:
    """The chart's user deployments by name (the locations'): `dagster api grpc` arguments and environment."""
    return {d["name"]: d for d in helm_values()["dagster-user-deployments"]["deployments"]}


class Service:
    """A long-running command in its own session, stopped (or killed, as a crash) with its process group."""

    def __init__(self, name: str, argv: list[str], env: dict, folder: Path):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = folder / f"{name}.log"
        self.proc = None

    def start(self) -> "Service":
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 2) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # still running, or children left behind in its group
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def tail(self) -> str:
        return f"--- {self.name} ---\n{self.log_path.read_text()[-3000:]}"


class Database:
    """Dagster's tables, read directly."""

    def __init__(self, postgres, name: str):
        self.postgres, self.name = postgres, name

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.postgres.connect(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def runs(self) -> list[dict]:
        rows = self.rows("SELECT r.run_id, r.status, r.start_time, r.end_time, r.run_body, k.value FROM runs r "
                         "LEFT JOIN run_tags k ON k.run_id = r.run_id AND k.key = 'dagster/run_key' ORDER BY r.id")
        from dagster import DagsterRun
        from dagster._serdes import deserialize_value

        return [{"run_id": run_id, "status": status, "start": start, "end": end, "run_key": key,
                 "config": json.loads(body)["run_config"]["ops"]["orchestrate"]["config"],
                 "origin": deserialize_value(body, DagsterRun).job_code_origin.repository_origin}
                for run_id, status, start, end, body, key in rows]

    def run_by_key(self, key: str) -> dict | None:
        return next((r for r in self.runs() if r["run_key"] == key), None)

    def sensor_data(self, sensor: str):
        """The sensor's stored state (its row decoded with Dagster's own serializer): cursor, last tick time."""
        from dagster._core.scheduler.instigation import InstigatorState
        from dagster._serdes import deserialize_value

        for (body,) in self.rows("SELECT instigator_body FROM instigators"):
            state = deserialize_value(body, InstigatorState)
            if state.instigator_name == sensor:
                return state.instigator_data
        return None

    def sensor_cursor(self, sensor: str) -> dict | None:
        data = self.sensor_data(sensor)
        return json.loads(data.cursor) if data and data.cursor else None

    def events(self, run_id: str) -> list[tuple[str, str | None, str]]:
        return self.rows("SELECT dagster_event_type, step_key, event FROM event_logs WHERE run_id = %s ORDER BY id",
                         (run_id,))


def wait_until(what: str, check, deadline: float, services: list[Service], interval: float = 0.25):
    while time.monotonic() < deadline:
        for service in services:
            assert service.proc is None or service.proc.poll() is None, f"{service.name} exited\n{service.tail()}"
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}\n" + "\n".join(s.tail() for s in services))


@pytest.fixture
def stack(tmp_path, infra, postgres, pg_database, moto_endpoint, plugin_dir, tf_cli_config):  # noqa: F811
    """DAGSTER_HOME rendered from deploy/dagster.yaml, the three services (not started), the database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    del instance["run_launcher"]  # no cluster here: the code server starts each run as a process (the default)
    instance["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1  # the only other change: a faster queue
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    deployments = code_locations()
    grpc_ports, web_port = {name: free_port() for name in deployments}, free_port()
    (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": port, "location_name": name}} for name, port in grpc_ports.items()]}))
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    ui = f"http://127.0.0.1:{web_port}"
    # one environment for every process, as the ConfigMap deploy/k8s/pipelines-env.yaml is shared in a cluster
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "DAGSTER_", "GITHUB_", "AWS_"))}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", DAGSTER_HOME=str(home),
               DAGSTER_PG_HOST=postgres.host, DAGSTER_PG_PORT=str(postgres.port), DAGSTER_PG_DB=pg_database,
               DAGSTER_PG_USERNAME=postgres.user, DAGSTER_PG_PASSWORD=postgres.password,
               DAGSTER_COMPUTE_LOG_BUCKET=BUCKET, AWS_ENDPOINT_URL=moto_endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               PIPELINES_REPO_URL=str(infra["bare"]), PIPELINES_DEPLOY_BRANCH="main",
               PIPELINES_TF_PLUGIN_DIR=str(plugin_dir),
               PIPELINES_CACHE_DIR=str(tmp_path / "cache"), PIPELINES_UI_URL=ui, PIPELINES_SENSOR_INTERVAL_S="1",
               PIPELINES_SENSORS_DEFAULT_STATUS="stopped", TF_CLI_CONFIG_FILE=str(tf_cli_config),
               TF_IN_AUTOMATION="1")
    workspace = str(home / "workspace.yaml")
    services = {
        **{name: Service(name, [str(VENV_BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(port),
                                *deployments[name]["dagsterApiGrpcArgs"]],
                         {**env, **{e["name"]: e["value"] for e in deployments[name]["env"]}}, tmp_path)
           for name, port in grpc_ports.items()},
        "web": Service("webserver", [str(VENV_BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                     "-p", str(web_port)], env, tmp_path),
        "daemon": Service("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", workspace], env, tmp_path),
    }
    try:
        yield {"services": services, "db": Database(postgres, pg_database), "home": home, "ui": ui,
               "grpc_ports": grpc_ports, "graphql": GraphQL(f"{ui}/graphql"), "moto": moto_endpoint}
    finally:
        for service in services.values():
            service.stop()


def code_server_ready(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        return DagsterGrpcClient(port=port, host="127.0.0.1").ping("ready") is not None
    except Exception:  # not listening yet
        return False


def loaded_locations(gql: GraphQL) -> dict[str, dict]:
    """The workspace's loaded code locations by name (a load error fails the test)."""
    try:
        entries = gql(WORKSPACE_QUERY, timeout=5)["workspaceOrError"].get("locationEntries", [])
    except (OSError, ConnectionError):
        return {}
    locations = {}
    for entry in entries:
        location = entry.get("locationOrLoadError") or {}
        assert location.get("__typename") != "PythonError", location
        if location.get("__typename") == "RepositoryLocation":
            locations[location["name"]] = location
    return locations


def test_pipeline_on_postgres_keeps_every_run_once_across_a_daemon_crash(stack, infra):  # noqa: F811
    deadline = time.monotonic() + DEADLINE_S
    plan_server, apply_server, web, daemon = (stack["services"][k] for k in (PLAN, APPLY, "web", "daemon"))
    servers = [plan_server, apply_server]
    db, gql = stack["db"], stack["graphql"]
    work, bare = infra["work"], infra["bare"]

    for server in servers:
        server.start()
    for name, server in zip((PLAN, APPLY), servers, strict=True):
        wait_until(f"the code server {name}", lambda n=name: code_server_ready(stack["grpc_ports"][n]), deadline,
                   [server], interval=0.5)
    web.start()
    daemon.start()
    wait_until("the webserver", lambda: web.proc.poll() is None and loaded_locations(gql).keys() == {PLAN, APPLY},
               deadline, [*servers, web], interval=0.5)
    locations = loaded_locations(gql)
    selector = {}
    for name, job in ((PLAN, "infrastructure_plan"), (APPLY, "infrastructure_apply")):
        [repository] = [r for r in locations[name]["repositories"] if job in [j["name"] for j in r["jobs"]]]
        selector[name] = {"repositoryLocationName": name, "repositoryName": repository["name"]}
        other = "infrastructure_apply" if name == PLAN else "infrastructure_plan"
        assert other not in [j["name"] for r in locations[name]["repositories"] for j in r["jobs"]]

    started = gql(START_SENSOR, {"selector": {**selector[APPLY], "sensorName": "deploy_branch_sensor"}})[
        "startSensor"]
    assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started
    first_look = wait_until("the deploy-branch sensor's first tick",
                            lambda: db.sensor_cursor("deploy_branch_sensor"), deadline, [*servers, web, daemon])
    assert first_look == {"branch": "main", "sha": infra["base"]}  # recorded, nothing applied

    # a plan for the feature branch, launched over GraphQL (it goes through the run queue)
    launched = gql(LAUNCH, {"params": {
        "selector": {**selector[PLAN], "jobName": "infrastructure_plan"},
        "runConfigData": {"ops": {"orchestrate": {"config": {
            "base_ref": infra["base"], "head_ref": infra["head"]}}}},
        "executionMetadata": {"tags": [{"key": "pipelines/sha", "value": infra["head"]}]}}})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    plan_run = launched["run"]["runId"]

    # two merges: two apply runs for one repository, the second held in the queue by the apply lock
    work.git("checkout", "-q", "main")
    c1 = work.commit({"units/gamma/main.tf": UNIT.format(count=1)}, "gamma")
    c2 = work.commit({"units/gamma/main.tf": UNIT.format(count=2)}, "bigger gamma")
    work.git("push", "-q", str(bare), "main")

    def first_running_second_queued():
        one, two = db.run_by_key(f"push-{c1}"), db.run_by_key(f"push-{c2}")
        return (one and two and one["status"] == "STARTED" and two["status"] == "QUEUED"
                and db.sensor_cursor("deploy_branch_sensor") == {"branch": "main", "sha": c2})

    wait_until("push-c1 running, push-c2 queued, the cursor at c2", first_running_second_queued, deadline,
               [*servers, web, daemon])
    daemon.stop(signal.SIGKILL)  # a crash: no clean shutdown

    # while the daemon is down: another merge waits for the sensor; the running apply finishes on its own (its
    # worker belongs to the apply code server), and nothing leaves the queue
    c3 = work.commit({"units/gamma/main.tf": UNIT.format(count=3)}, "even bigger gamma")
    work.git("push", "-q", str(bare), "main")
    wait_until("push-c1 to finish without the daemon",
               lambda: db.run_by_key(f"push-{c1}")["status"] in DONE, deadline, [*servers, web])
    assert db.run_by_key(f"push-{c2}")["status"] == "QUEUED"
    assert db.run_by_key(f"push-{c3}") is None

    daemon.start()

    def all_done():
        runs = db.runs()
        keys = {r["run_key"] for r in runs}
        return (f"push-{c3}" in keys and all(r["status"] in DONE for r in runs)) and runs

    wait_until("every run to finish after the restart", all_done, deadline, [*servers, web, daemon], 0.5)
    finished_at = time.time()
    wait_until("one more sensor tick", lambda: db.sensor_data("deploy_branch_sensor").last_tick_timestamp
               > finished_at, deadline, [*servers, web, daemon], 0.5)
    runs = db.runs()

    # each run exactly once, all succeeded, applies one after the other, each from the previous commit
    keys = Counter(r["run_key"] for r in runs)
    assert keys == Counter({None: 1, f"push-{c1}": 1, f"push-{c2}": 1, f"push-{c3}": 1}), keys
    failed = {r["run_id"]: r["status"] for r in runs if r["status"] != "SUCCESS"}
    assert not failed, "\n".join(f"{run_id} {status}:\n{run_logs(gql, run_id)}"
                                 for run_id, status in failed.items())
    applies = [db.run_by_key(f"push-{c}") for c in (c1, c2, c3)]
    assert [(a["config"]["base_ref"], a["config"]["head_ref"]) for a in applies] == [
        (infra["base"], c1), (c1, c2), (c2, c3)]
    assert applies[0]["end"] <= applies[1]["start"] and applies[1]["end"] <= applies[2]["start"]
    assert db.sensor_cursor("deploy_branch_sensor") == {"branch": "main", "sha": c3}

    # each run carries its code location's container context, which names its pod's service account on
    # Kubernetes (dagster-k8s reads it from the run's origin): the plan run pipelines-plan, the applies
    # pipelines-apply; from the Helm values' environment, through `dagster api grpc`
    contexts = {r["run_id"]: r["origin"].container_context for r in runs}
    assert contexts[plan_run] == {"k8s": {"service_account_name": PLAN}}
    assert {json.dumps(contexts[a["run_id"]]) for a in applies} == {
        json.dumps({"k8s": {"service_account_name": APPLY}})}

    # the events are in Postgres: the plan run's steps and report, the applies' terraform results
    events = db.events(plan_run)
    types = [t for t, _, _ in events]
    assert types[0] == DagsterEventType.RUN_ENQUEUED.value, types
    assert {DagsterEventType.RUN_START.value, DagsterEventType.RUN_SUCCESS.value} <= set(types), types
    succeeded = {step for t, step, _ in events if t == "STEP_SUCCESS"}
    assert {"orchestrate", "report"} <= succeeded and any(s.startswith("plan[") for s in succeeded), succeeded
    report = next(body for t, step, body in events if t == "STEP_OUTPUT" and step == "report")
    assert "ModuleAdded" in report and "units/alpha" in report and "units/beta" in report
    for apply_run in applies:
        text = "\n".join(body for _, _, body in db.events(apply_run["run_id"]))
        assert "units/gamma: apply succeeded" in text, run_logs(gql, apply_run["run_id"])

    # compute logs went to the bucket, and nothing was stored on this machine's disk in SQLite
    s3 = boto3.client("s3", endpoint_url=stack["moto"], region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    keys_in_bucket = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(plan_run in key for key in keys_in_bucket), keys_in_bucket
    assert not list(stack["home"].rglob("*.db")), list(stack["home"].rglob("*.db"))
