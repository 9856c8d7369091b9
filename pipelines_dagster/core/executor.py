"""One infra-change, executed: the commit to run from, the unit's kind and engine, its account's credentials,
a private working copy, the engine run. Shared by `pipelines-dagster execute` and the pipeline's dispatch step.
"""

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PipelinesConfig
from .credentials import CredentialProvider, CredentialsError, session_name
from .engine import EngineSettings, Result, Status, run_in_workdir
from .model import Action, Event, UnitKind
from .redact import default_redactor
from .repo_config import RepoConfig, trusted_config

log = logging.getLogger(__name__)


@dataclass
class ExecuteRequest:
    unit: str
    action: Action
    event: Event
    head: str  # full sha of the change's head commit
    base: str | None = None  # full sha of the base commit (required for plan-destroy / destroy)
    pr: int | None = None


def commit_for(action: Action, head: str, base: str | None) -> str | None:
    """Destroys run from the base commit, where the deleted unit still exists."""
    return base if Action(action).is_destroy else head


def unit_kind(repo, sha: str, unit: str) -> UnitKind | None:
    """Terragrunt when the unit folder holds terragrunt.hcl at that commit, Terraform otherwise; None if absent."""
    from ..integrations.git import list_folders

    files = list_folders(repo, sha, [unit])
    if not files:
        return None
    return UnitKind.TERRAGRUNT if f"{unit}/terragrunt.hcl" in files else UnitKind.TERRAFORM


class Executor:
    """Runs infra-changes of one repository. `config` decides engines; `credentials_config` (trusted: read from
    the deploy branch) decides accounts and roles. Without accounts or a provider, units use ambient credentials."""

    def __init__(self, repo, *, config: PipelinesConfig | None = None, credentials_config: RepoConfig | None = None,
                 provider: CredentialProvider | None = None, settings: EngineSettings | None = None):
        self.repo = repo
        self.config = config or PipelinesConfig()
        self.credentials_config = credentials_config
        self.provider = provider
        self.settings = settings or EngineSettings.from_env()

    def execute(self, request: ExecuteRequest, *, on_deploy_branch: bool) -> Result:
        started = time.monotonic()
        result = self._execute(request, on_deploy_branch)
        result.duration_s = time.monotonic() - started
        return result

    def _execute(self, req: ExecuteRequest, on_deploy_branch: bool) -> Result:
        action, event = Action(req.action), Event(req.event)

        def failed(message: str, status: Status = Status.FAILED) -> Result:
            return Result(status=status, unit=req.unit, action=action.value, commit=commit,
                          message=default_redactor()(message))

        commit = commit_for(action, req.head, req.base)
        if not action.runs_terraform:
            return failed(f"action {action.value!r} does not run terraform")
        if action in (Action.APPLY, Action.DESTROY) and event is not Event.PUSH:
            return failed(f"{action.value} only runs for push events on the deploy branch, not {event.value}")
        if commit is None:
            return failed(f"{action.value} runs from the base commit, where the unit still exists: a base is needed")
        kind = unit_kind(self.repo, commit, req.unit)
        if kind is None:
            return failed(f"unit {req.unit} does not exist at commit {commit[:12]}")
        engine = self.config.engine_for(req.unit, kind)

        credentials_env = None
        account_name = role_arn = None
        secrets: list[str] = []
        trusted = self.credentials_config
        if trusted is not None and trusted.accounts is not None and self.provider is not None:
            account_name = trusted.config.account_for(req.unit, trusted.accounts)
            account = trusted.accounts.entries.get(account_name) if account_name else None
            if account is None:
                return failed(f"unit {req.unit} belongs to account {account_name!r}, which is not in "
                              f"{trusted.accounts.file} on the deploy branch: no credentials for it")
            try:
                creds = self.provider.for_account(account_name, account, event, on_deploy_branch=on_deploy_branch,
                                                  session=session_name(req.head, req.pr), commit=req.head)
            except CredentialsError as exc:
                result = failed(str(exc))
                result.account, result.transient = account_name, exc.transient
                return result
            credentials_env, role_arn = creds.child_env(), creds.role_arn
            secrets = creds.secrets()
        redactor = default_redactor(*secrets, *(self.provider.recent_tokens if self.provider else ()))

        run_dir = Path(tempfile.mkdtemp(prefix="pipelines-run-", dir=self.settings.workdir_root))
        try:
            from ..integrations.git import GitError, checkout

            try:
                checkout(self.repo, commit, run_dir / "src")
            except GitError as exc:
                return failed(f"cannot check out {commit[:12]}: {exc}")
            result = run_in_workdir(run_dir / "src", req.unit, action, engine, credentials_env=credentials_env,
                                    settings=self.settings, redactor=redactor, run_dir=run_dir, commit=commit)
        finally:
            if not self.settings.keep_workdir:
                shutil.rmtree(run_dir, ignore_errors=True)
        result.account, result.role_arn = account_name, role_arn
        return result


@dataclass
class Prepared:
    """An executor for one head commit, with the deploy-branch facts that decide its credentials."""

    executor: Executor
    on_deploy_branch: bool
    deploy_branch: str
    notices: list[str]


def prepare(repo, head: str, *, deploy_branch: str | None = None, settings: EngineSettings | None = None,
            token_source=None) -> Prepared:
    """Everything between "run this commit" and an Executor: engines, accounts and roles from the deploy branch
    (a pull request must not choose its own engines or credentials), whether the commit is on the deploy branch,
    and the deployment's OIDC token source. `deploy_branch` is the deployment's override. ConfigError when the
    deploy branch or its configuration is unusable."""
    from ..integrations.git import is_ancestor
    from .credentials import token_source_from_env

    trusted = trusted_config(repo, deploy_branch)
    on_deploy_branch = is_ancestor(repo, head, trusted.sha)
    token_source = token_source if token_source is not None else token_source_from_env()
    notices, provider = [], None
    if trusted.accounts is not None and token_source is not None:
        provider = CredentialProvider(token_source, trusted.config.roles, deploy_branch=trusted.branch)
    elif trusted.accounts is not None:
        notices.append("no OIDC token source configured (PIPELINES_WEB_IDENTITY_TOKEN_FILE, "
                       "AWS_WEB_IDENTITY_TOKEN_FILE, GitHub Actions, PIPELINES_WEB_IDENTITY_TOKEN_COMMAND): "
                       "using ambient credentials")
    executor = Executor(repo, config=trusted.config, credentials_config=trusted, provider=provider,
                        settings=settings or EngineSettings.from_env())
    return Prepared(executor, on_deploy_branch, trusted.branch, notices)
