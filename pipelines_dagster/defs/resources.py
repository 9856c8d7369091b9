"""The code location's resources: the repository, GitHub, the deploy branch's accounts, how changes run (the
`changes` resource, defs/execution.py) and the IO manager of what steps pass each other.

Every resource is the deployment's (pipelines_dagster.settings, read once by definitions.py) or the deploy
branch's, never the launcher's: each is a fixed value with an empty configuration schema, so Dagster refuses, when
it is launched, a run whose configuration sets anything of a resource (`resources: {github: {config: {api_url:
...}}}` from the Launchpad, `dagster job execute -c` or GraphQL) naming the entry. The resources page shows each
one's values in its description; no value is a secret (tokens are read where they are used).
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import TypeAdapter, ValidationError

from ..core.lineage import AccountNode
from ..integrations.github_etags import ETagCache
from ..settings import Settings

SET_BY_DEPLOYMENT = "Set by the deployment; a run's configuration cannot change it."


def fixed_resource(value: Any, description: str) -> dg.ResourceDefinition:
    """`value` as a resource that takes no configuration: a run whose config gives it any is refused at launch."""
    return dg.ResourceDefinition(resource_fn=lambda _init: value, config_schema={},
                                 description=f"{description}\n\n{SET_BY_DEPLOYMENT}")


def _values(**values: Any) -> str:
    return "\n".join(f"- {name}: `{value}`" for name, value in values.items() if value not in (None, ""))


@dataclass(frozen=True)
class InfraRepo:
    """infrastructure-live: a local path or a git URL (mirrored under the cache and fetched on use), and how
    change detection in it is bounded."""

    location: str
    deploy_branch_override: str | None
    cache_root: Path
    index_cache: Path | None
    git_timeout_s: float
    detect_timeout_s: float
    detect_memory_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "InfraRepo":
        return cls(location=settings.repo_url or ".", deploy_branch_override=settings.deploy_branch,
                   cache_root=settings.cache_root, index_cache=settings.index_cache,
                   git_timeout_s=settings.git_timeout_s, detect_timeout_s=settings.detect_timeout_s,
                   detect_memory_mb=settings.detect_memory_mb)

    def git_dir(self, fetch: bool = True) -> Path:
        from ..integrations.git import open_git_dir

        return open_git_dir(self.location, fetch=fetch, cache_root=self.cache_root, timeout_s=self.git_timeout_s)

    def deploy_head(self) -> tuple[Path, str, str | None]:
        """(git dir, deploy branch, its head) with only the default and the deploy branch fetched: what other
        branches and pull requests hold costs the deploy branch's watchers nothing."""
        from ..integrations.git import GitError, branch_sha, open_git_dir, remote_branch_heads

        git_dir = open_git_dir(self.location, fetch=False, cache_root=self.cache_root, timeout_s=self.git_timeout_s,
                               refs=[])
        branch = self.deploy_branch(git_dir)
        for _ in range(2):  # twice when the fetched default branch names another deploy branch
            try:
                open_git_dir(self.location, cache_root=self.cache_root, timeout_s=self.git_timeout_s,
                             refs=[f"refs/heads/{branch}"])
            except GitError:
                if branch not in remote_branch_heads(git_dir, self.git_timeout_s):
                    return git_dir, branch, None
                raise
            branch, before = self.deploy_branch(git_dir), branch
            if branch == before:
                break
        return git_dir, branch, branch_sha(git_dir, branch)

    def fetch_for_run(self, refs: Sequence[str]) -> tuple[Path, str]:
        """(git dir, deploy branch) with the deploy branch and `refs` fetched (what a run names: a pull request's
        head, branches); everything when one of those cannot be fetched on its own."""
        from ..integrations.git import GitError, fetch

        git_dir, branch, _ = self.deploy_head()
        try:
            fetch(git_dir, refs, self.git_timeout_s)
        except GitError:
            self.git_dir(fetch=True)
        return git_dir, branch

    def deploy_branch(self, git_dir) -> str:
        """The deploy branch: the deployment's, else `.pipelines.yml`'s on the default branch."""
        from ..core.trust import deploy_branch

        return deploy_branch(git_dir, self.deploy_branch_override)

    def description(self) -> str:
        from ..redact import without_url_credentials

        return "infrastructure-live, its deploy branch and how change detection is bounded.\n\n" + _values(
            location=without_url_credentials(self.location),
            deploy_branch=self.deploy_branch_override or "from .pipelines.yml of the default branch",
            cache=self.cache_root, detect_timeout_s=self.detect_timeout_s, detect_memory_mb=self.detect_memory_mb)


@dataclass(frozen=True)
class GitHub:
    """GitHub (a token or an App, read when used); `repo` None is local mode: no GitHub calls at all."""

    repo: str | None
    api_url: str
    # a run makes a few writes and each step has its own client, so PyGithub's default 1 s pause between writes
    # would only slow the run; GitHub's secondary rate limits are honoured by the retries instead
    write_pause_s: float
    # list pages' last answers, kept across sensor ticks (each tick has a client of its own)
    etags: ETagCache = field(default_factory=ETagCache, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "GitHub":
        return cls(repo=settings.github_repo, api_url=settings.github_api_url,
                   write_pause_s=settings.github_write_pause_s)

    @property
    def local_mode(self) -> bool:
        return not self.repo

    def client(self, **kwargs):
        """A client of the repository (integrations.github.GitHubClient), None in local mode."""
        if self.repo is None:
            return None
        from ..integrations.github import GitHubClient

        kwargs.setdefault("seconds_between_writes", self.write_pause_s)
        kwargs.setdefault("seconds_between_requests", 0)
        return GitHubClient.from_env(self.repo, base_url=self.api_url, **kwargs)

    def sensor_client(self):
        """A client for sensor ticks: at most one quick retry, no long rate-limit sleeps (the next tick retries)."""
        from ..integrations.github_retry import RetryPolicy

        return self.client(retry=RetryPolicy(total=1, backoff_factor=0.5, backoff_max=2, secondary_rate_wait=2,
                                             max_rate_limit_wait=5), timeout=10, etags=self.etags)

    def push_token(self, location: str) -> str | None:
        """The GitHub token git pushes branches to an https remote with; None keeps git's own credentials."""
        from ..integrations.github import token_from_env

        if self.local_mode or not location.startswith("https://"):
            return None
        return token_from_env()

    def description(self) -> str:
        if self.local_mode:
            return "GitHub: not used (local mode: PIPELINES_GITHUB_REPO is not set)."
        return "GitHub: pull request comments, commit statuses, issues.\n\n" + _values(
            repository=self.repo, api=self.api_url, pause_between_writes_s=self.write_pause_s)


def account_resource_key(name: str) -> str:
    """The resource key of an account: `aws_` and the name's letters, digits and `_`."""
    import re

    return "aws_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def account_description(account: AccountNode) -> str:
    return (f"AWS account `{account.name}` of the deploy branch's accounts file, and the roles the pipeline assumes "
            "in it through OIDC: the plan role for pull requests and drift checks, the apply role only for commits "
            "of the deploy branch.\n\n" + _values(
                account_id=account.id, plan_role=account.plan_role_arn, apply_role=account.apply_role_arn,
                session_duration_s=account.session_duration_s, region=account.region))


class ContractsIOManager(dg.IOManager):
    """What the jobs' steps pass each other (core.dispatch's StepChanges and Progress, core.model's Outcome lists)
    as JSON, validated against their type when a step loads it: no pickles, and no step gets a value that is not a valid
    contract. Each value is stored under `<run id>/<step>/<output>[/<mapping key>]` (where Dagster's filesystem IO
    manager puts its own, so "Re-execute from failure" finds the outputs of the run it re-executes): under the
    instance's storage folder, or in an S3 bucket for step pods, which share no filesystem. Nothing is logged per
    value."""

    PREFIX = "pipelines-step-outputs"

    def __init__(self, root: Path, bucket: str | None = None):
        self.root, self.bucket, self._s3 = root, bucket, None
        if bucket:
            import boto3

            self._s3 = boto3.client("s3")  # the pod's own credentials and region (AWS_ENDPOINT_URL honoured)

    @classmethod
    def definition(cls, bucket: str | None) -> dg.IOManagerDefinition:
        where = f"the S3 bucket `{bucket}`" if bucket else "files under the instance's storage folder"
        return dg.IOManagerDefinition(
            resource_fn=lambda init: cls(Path(init.instance.storage_directory()), bucket), config_schema={},
            description=f"What steps pass each other, as validated JSON in {where}. {SET_BY_DEPLOYMENT}")

    def _where(self, identifier: Sequence[str]) -> str:
        return f"s3://{self.bucket}/{self._key(identifier)}" if self.bucket else str(self.root.joinpath(*identifier))

    def _key(self, identifier: Sequence[str]) -> str:
        return "/".join([self.PREFIX, *identifier])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self._write(context.get_identifier(), _adapter(context.dagster_type.typing_type).dump_json(obj))

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        assert upstream is not None  # inputs of this job all come from outputs
        identifier, typing_type = upstream.get_identifier(), upstream.dagster_type.typing_type
        step = context.step_context
        if upstream.run_id != step.run_id:  # a re-execution: its parent must be a run of this very job
            parent = step.instance.get_run_by_id(upstream.run_id)
            if parent is None or parent.job_name != step.job_name:
                raise dg.Failure(f"the output {upstream.step_key}.{upstream.name} comes from run {upstream.run_id} "
                                 f"of {parent.job_name if parent else 'no known job'}, not of {step.job_name}: a "
                                 "re-execution runs what its own job produced, nothing else")
        where, data = self._where(identifier), self._read(identifier)
        if data is None:
            elsewhere = "" if self.bucket or upstream.run_id == context.step_context.run_id else (
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
                self._s3.put_object(Bucket=self.bucket, Key=self._key(identifier), Body=data,
                                    ContentType="application/json")
            except self._s3.exceptions.ClientError as exc:
                raise dg.Failure(f"{self._where(identifier)}: cannot store the output: {exc}") from None
            return
        path = self.root.joinpath(*identifier)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # a killed step leaves no half value
        partial.write_bytes(data)
        partial.replace(path)

    def _read(self, identifier: Sequence[str]) -> bytes | None:
        if self._s3 is not None:
            try:
                return self._s3.get_object(Bucket=self.bucket, Key=self._key(identifier))["Body"].read()
            except self._s3.exceptions.NoSuchKey:
                return None
            except self._s3.exceptions.ClientError as exc:
                raise dg.Failure(f"{self._where(identifier)}: cannot read the output: {exc}") from None
        try:
            return self.root.joinpath(*identifier).read_bytes()
        except FileNotFoundError:
            return None


@cache
def _adapter(typing_type: Any) -> TypeAdapter:
    return TypeAdapter(typing_type)


def apply_lock(github: GitHub, infra_repo: InfraRepo) -> str:
    """The value of the apply-lock run tag: one per repository, so its applies (and drift runs) never overlap."""
    from ..core.run_requests import repo_identity

    return repo_identity(github.repo or infra_repo.location)


def resources_from_settings(settings: Settings, accounts: Sequence[AccountNode] = ()) -> dict:
    """Every resource of the code location: the repository, GitHub, how changes run, the deploy branch's
    `accounts` (one `aws_<name>` each), and the IO manager of what steps pass each other."""
    from .execution import ChangeRunner

    infra_repo, github = InfraRepo.from_settings(settings), GitHub.from_settings(settings)
    changes = ChangeRunner.from_settings(settings, infra_repo, github, accounts)
    resources: dict[str, Any] = {
        "io_manager": ContractsIOManager.definition(settings.step_outputs_bucket),
        "infra_repo": fixed_resource(infra_repo, infra_repo.description()),
        "github": fixed_resource(github, github.description()),
        "changes": fixed_resource(changes, changes.description()),
    }
    resources.update({account_resource_key(a.name): fixed_resource(a, account_description(a)) for a in accounts})
    return resources
