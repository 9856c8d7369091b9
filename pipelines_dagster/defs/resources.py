"""Resources, built from the deployment's settings (pipelines_dagster.settings): the repository, GitHub, how
units run, and one resource per AWS account of the deploy branch (its roles, assumed through OIDC).

Resource configuration is shown in the UI: it holds no secret. The GitHub token and the OIDC token are read when
they are used (from the files the deployment names, or the environment)."""

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr, TypeAdapter, ValidationError

from ..core.engine import EngineSettings
from ..settings import Settings


class ContractsIOManager(dg.ConfigurableIOManager):
    """What the job's steps pass each other (core.dispatch's Item and Progress, core.model's Outcome lists) as JSON,
    validated against their type when a step loads it: no pickles, and no step gets a value that is not a valid
    contract. Each value is stored under `<run id>/<step>/<output>[/<mapping key>]` (where Dagster's filesystem IO
    manager puts its own, so "Re-execute from failure" finds the outputs of the run it re-executes): under the
    instance's storage folder, or in an S3 bucket for step pods, which share no filesystem. Nothing is logged per
    value."""

    s3_bucket: str | None = Field(default=None, description="S3 bucket of the values (PIPELINES_STEP_OUTPUTS_BUCKET); "
                                                            "unset: files under the instance's storage folder")
    s3_prefix: str = Field(default="pipelines-step-outputs", description="key prefix in the bucket")
    _root: Path = PrivateAttr()
    _s3: Any = PrivateAttr(None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.s3_bucket:
            import boto3

            self._s3 = boto3.client("s3")  # the pod's own credentials and region (AWS_ENDPOINT_URL honoured)
        else:
            assert context.instance is not None  # Dagster initialises resources with its instance
            self._root = Path(context.instance.storage_directory())

    def _where(self, identifier: Sequence[str]) -> str:
        return f"s3://{self.s3_bucket}/{self._key(identifier)}" if self.s3_bucket else str(
            self._root.joinpath(*identifier))

    def _key(self, identifier: Sequence[str]) -> str:
        return "/".join([self.s3_prefix, *identifier])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self._write(context.get_identifier(), _adapter(context.dagster_type.typing_type).dump_json(obj))

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None  # inputs of this job all come from outputs
        identifier, typing_type = upstream.get_identifier(), upstream.dagster_type.typing_type
        where, data = self._where(identifier), self._read(identifier)
        if data is None:
            elsewhere = "" if self.s3_bucket or upstream.run_id == context.step_context.run_id else (
                f" (run {upstream.run_id} wrote it: if that run's steps ran on another machine or pod, set "
                "PIPELINES_STEP_OUTPUTS_BUCKET so that runs share their values)")
            raise dg.Failure(f"{where}: the output {upstream.step_key}.{upstream.name} is missing{elsewhere}")
        try:
            return _adapter(typing_type).validate_json(data)
        except ValidationError as exc:
            raise dg.Failure(f"{where}: not a valid {getattr(typing_type, '__name__', typing_type)} "
                             f"({exc.error_count()} error(s)): {str(exc)[:1000]}") from None

    def _write(self, identifier: Sequence[str], data: bytes) -> None:
        if self._s3 is not None:
            try:
                self._s3.put_object(Bucket=self.s3_bucket, Key=self._key(identifier), Body=data,
                                    ContentType="application/json")
            except self._s3.exceptions.ClientError as exc:
                raise dg.Failure(f"{self._where(identifier)}: cannot store the output: {exc}") from None
            return
        path = self._root.joinpath(*identifier)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # a killed step leaves no half value
        partial.write_bytes(data)
        partial.replace(path)

    def _read(self, identifier: Sequence[str]) -> bytes | None:
        if self._s3 is not None:
            try:
                return self._s3.get_object(Bucket=self.s3_bucket, Key=self._key(identifier))["Body"].read()
            except self._s3.exceptions.NoSuchKey:
                return None
            except self._s3.exceptions.ClientError as exc:
                raise dg.Failure(f"{self._where(identifier)}: cannot read the output: {exc}") from None
        try:
            return self._root.joinpath(*identifier).read_bytes()
        except FileNotFoundError:
            return None


@cache
def _adapter(typing_type: Any) -> TypeAdapter:
    return TypeAdapter(typing_type)


class InfraRepoResource(dg.ConfigurableResource):
    """infrastructure-live: a local path or a git URL (mirrored under the cache and fetched on use)."""

    location: str = Field(description="git URL or local path of infrastructure-live (PIPELINES_REPO_URL)")
    deploy_branch: str | None = Field(None, description="the deploy branch, overriding .pipelines.yml's "
                                                         "(PIPELINES_DEPLOY_BRANCH)")
    cache_dir: str = Field(description="mirrors and caches (PIPELINES_CACHE_DIR)")
    index_cache: bool = Field(True, description="parse and evaluation cache on disk (not PIPELINES_NO_CACHE)")
    git_timeout_s: float = Field(45, description="deadline of a fetch (PIPELINES_GIT_TIMEOUT_S)")
    detect_timeout_s: float = Field(600, description="deadline of change detection (PIPELINES_DETECT_TIMEOUT_S)")
    detect_memory_mb: int = Field(4096, description="its memory (PIPELINES_DETECT_MEMORY_MB)")

    def git_dir(self, fetch: bool = True) -> Path:
        from ..integrations.git import open_git_dir

        return open_git_dir(self.location, fetch=fetch, cache_root=Path(self.cache_dir),
                            timeout_s=self.git_timeout_s)

    @property
    def index_cache_dir(self) -> Path | None:
        return Path(self.cache_dir) / "index" if self.index_cache else None


class GitHubResource(dg.ConfigurableResource):
    """GitHub (token or App, read when used); `repo` unset means local mode: no GitHub calls at all."""

    repo: str | None = Field(None, description="owner/name on GitHub; unset: local mode (PIPELINES_GITHUB_REPO)")
    api_url: str = Field("https://api.github.com", description="GitHub's API base (GITHUB_API_URL)")
    # a run makes a few writes and each step has its own client, so PyGithub's default 1 s pause between writes
    # would only slow the run; GitHub's secondary rate limits are honoured by the retries instead
    seconds_between_writes: float = Field(0.1, description="pause between writes (PIPELINES_GITHUB_WRITE_PAUSE_S)")

    @property
    def local_mode(self) -> bool:
        return not self.repo

    def client(self, **kwargs):
        if self.local_mode:
            return None
        from ..integrations.github import GitHubClient

        kwargs.setdefault("seconds_between_writes", self.seconds_between_writes)
        kwargs.setdefault("seconds_between_requests", 0)
        return GitHubClient.from_env(self.repo, base_url=self.api_url, **kwargs)

    def push_token(self, location: str) -> str | None:
        """The GitHub token (PIPELINES_GITHUB_TOKEN_FILE, else GITHUB_TOKEN) git authenticates with to push
        branches to an https remote; None keeps git's own credentials."""
        from ..integrations.github import token_from_env

        if self.local_mode or not location.startswith("https://"):
            return None
        return token_from_env()


class EngineResource(dg.ConfigurableResource):
    """How units run (the executor's settings), how failures are retried, and where the UI is."""

    max_parallel: int = Field(4, description="units of one step at the same time (PIPELINES_MAX_PARALLEL)")
    plugin_dir: str | None = Field(None, description="terraform init -plugin-dir (PIPELINES_TF_PLUGIN_DIR)")
    timeout_s: float = Field(3600, description="deadline of one unit's action (PIPELINES_ACTION_TIMEOUT_S)")
    unit_user: str | None = Field(None, description="what units run as (PIPELINES_UNIT_USER)")
    unit_env: list[str] = Field(default_factory=list, description="more variables for units (PIPELINES_UNIT_ENV)")
    plan_lock: bool = Field(False, description="plans take the state lock (PIPELINES_PLAN_LOCK)")
    lock_timeout: str = Field("5m", description="applies wait this long for the lock (PIPELINES_LOCK_TIMEOUT)")
    apply_grace_s: float = Field(600, description="SIGKILL of an apply after SIGTERM (PIPELINES_APPLY_GRACE_S)")
    work_dir: str | None = Field(None, description="where run folders go (PIPELINES_WORK_DIR)")
    cache_dir: str = Field(description="lock records of our commands (PIPELINES_CACHE_DIR)")
    transient_retries: int = Field(2, description="retries after a transient failure (PIPELINES_LOCK_RETRIES)")
    transient_retry_wait_s: float = Field(30, description="wait before them (PIPELINES_LOCK_RETRY_WAIT_S)")
    apply_lock_retries: int = Field(60, description="waits for another apply (PIPELINES_APPLY_LOCK_RETRIES)")
    apply_lock_wait_s: float = Field(30, description="between them (PIPELINES_APPLY_LOCK_WAIT_S)")
    ui_url: str | None = Field(None, description="base URL of the Dagster UI (PIPELINES_UI_URL)")
    aws_region: str | None = Field(None, description="STS region (AWS_REGION)")

    def settings(self, **overrides) -> EngineSettings:
        return EngineSettings(plugin_dir=self.plugin_dir, timeout_s=self.timeout_s, unit_user=self.unit_user,
                              env_names=list(self.unit_env), plan_lock=self.plan_lock,
                              lock_timeout=self.lock_timeout or None, apply_kill_grace_s=self.apply_grace_s,
                              workdir_root=self.work_dir, holders_dir=str(Path(self.cache_dir) / "lock-holders"),
                              **overrides)

    def run_url(self, run_id: str) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if self.ui_url else None


class AccountResource(ResourceWithBoto3Configuration):
    """One AWS account of the deploy branch: its id and the roles the pipeline assumes in it through OIDC (the
    plan role for pull requests, the apply role only for deploy-branch commits). `region_name` and `endpoint_url`
    are those of STS (boto3's defaults and AWS_ENDPOINT_URL otherwise)."""

    account_name: str = Field(description="the account's name in the accounts file")
    account_id: str = Field(description="the 12-digit AWS account id")
    plan_role_arn: str = Field(description="the role pull requests' plans run with")
    apply_role_arn: str = Field(description="the role deploy-branch applies run with")
    session_duration_s: int = Field(3600, description="lifetime of the credentials")
    oidc_audience: str = Field("sts.amazonaws.com",
                               description="audience of GitHub Actions' OIDC tokens (PIPELINES_OIDC_AUDIENCE)")

    def provider(self, deploy_branch: str):
        """A core CredentialProvider whose STS client has this resource's boto3 configuration."""
        import boto3
        from botocore.config import Config

        from ..core.config import RolesConfig
        from ..core.credentials import CredentialProvider, token_source_from_env

        token_source = token_source_from_env(audience=self.oidc_audience)
        if token_source is None:
            return None
        # retries are the provider's (throttling only, with backoff); botocore's would also retry other errors
        sts = boto3.session.Session(profile_name=self.profile_name).client(
            "sts", region_name=self.region_name or "us-east-1", endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl, verify=self.verify,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30))
        return CredentialProvider(token_source, RolesConfig(session_duration_s=self.session_duration_s),
                                  deploy_branch=deploy_branch, region=self.region_name, sts_client=sts,
                                  max_attempts=max(self.max_attempts, 1) + 1)


def account_resource_key(name: str) -> str:
    """The resource key of an account: `aws_` and the name's letters, digits and `_`."""
    import re

    return "aws_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def account_resources(lineage, settings: Settings) -> dict[str, AccountResource]:
    """One resource per account of the deploy branch (a core.lineage.Lineage)."""
    return {account_resource_key(a.name): AccountResource(
        account_name=a.name, account_id=a.id, plan_role_arn=a.plan_role_arn, apply_role_arn=a.apply_role_arn,
        session_duration_s=a.session_duration_s, region_name=a.region or settings.aws_region,
        oidc_audience=settings.oidc_audience)
        for a in lineage.accounts}


class AccountCredentials:
    """What the executor asks for credentials (core.credentials.CredentialProvider's interface), answered by the
    account's resource. The deploy branch's accounts file decides which account a unit belongs to; when it no
    longer agrees with the resource (the code location was loaded before the account changed), nothing is
    assumed."""

    def __init__(self, resources, deploy_branch: str, roles):
        self.resources, self.deploy_branch, self.roles = resources, deploy_branch, roles
        self.recent_tokens: list[str] = []

    def for_account(self, account_name: str, account, event, *, on_deploy_branch: bool, session: str,
                    commit: str | None = None):
        from ..core.credentials import CredentialsError, choose_role, role_arn_for

        resource = getattr(self.resources, account_resource_key(account_name), None)
        plan_arn, apply_arn = role_arn_for(account, "plan", self.roles), role_arn_for(account, "apply", self.roles)
        if resource is None or (resource.account_id, resource.plan_role_arn, resource.apply_role_arn) != \
                (account.id, plan_arn, apply_arn):
            what = "has no resource in this code location" if resource is None else "differs from its resource"
            raise CredentialsError(f"account {account_name!r} on the deploy branch {what} (the accounts file "
                                   "changed after the code location loaded): reload the code location")
        role_arn = choose_role(account_name, resource.plan_role_arn, resource.apply_role_arn, event,
                               on_deploy_branch=on_deploy_branch, deploy_branch=self.deploy_branch, commit=commit)
        provider = resource.provider(self.deploy_branch)
        if provider is None:
            raise CredentialsError("no OIDC token source configured (PIPELINES_WEB_IDENTITY_TOKEN_FILE, "
                                   "AWS_WEB_IDENTITY_TOKEN_FILE, GitHub Actions, PIPELINES_WEB_IDENTITY_TOKEN_COMMAND)")
        try:
            return provider.assume(role_arn, session, account_name, account.region or resource.region_name)
        finally:
            self.recent_tokens.extend(provider.recent_tokens)


def apply_lock(github: GitHubResource, infra_repo: InfraRepoResource) -> str:
    """The value of the apply-lock run tag: one per repository, so its applies (and drift runs) never overlap."""
    from ..core.watch import repo_identity

    return repo_identity(github.repo or infra_repo.location)


def resources_from_settings(settings: Settings, lineage=None) -> dict:
    """Every resource of the code location: the repository, GitHub, the engine, the deploy branch's accounts
    (from `lineage`, a core.lineage.Lineage), and the IO manager of what steps pass each other."""
    cache = str(settings.cache_root)
    resources: dict = {
        "io_manager": ContractsIOManager(s3_bucket=settings.step_outputs_bucket),
        "infra_repo": InfraRepoResource(location=settings.repo_url or ".", deploy_branch=settings.deploy_branch,
                                        cache_dir=cache, index_cache=not settings.no_cache,
                                        git_timeout_s=settings.git_timeout_s,
                                        detect_timeout_s=settings.detect_timeout_s,
                                        detect_memory_mb=settings.detect_memory_mb),
        "github": GitHubResource(repo=settings.github_repo, api_url=settings.github_api_url,
                                 seconds_between_writes=settings.github_write_pause_s),
        "engine": EngineResource(max_parallel=settings.max_parallel, plugin_dir=settings.tf_plugin_dir,
                                 timeout_s=settings.action_timeout_s, unit_user=settings.effective_unit_user,
                                 unit_env=settings.unit_env, plan_lock=settings.plan_lock,
                                 lock_timeout=settings.lock_timeout, apply_grace_s=settings.apply_grace_s,
                                 work_dir=settings.work_dir, cache_dir=cache,
                                 transient_retries=settings.transient_retries,
                                 transient_retry_wait_s=settings.transient_retry_wait_s,
                                 apply_lock_retries=settings.apply_lock_retries,
                                 apply_lock_wait_s=settings.apply_lock_wait_s, ui_url=settings.ui_url,
                                 aws_region=settings.aws_region),
    }
    if lineage is not None:
        resources.update(account_resources(lineage, settings))
    return resources
