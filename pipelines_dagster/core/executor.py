"""One infra-change, executed: the commit to run from, the unit's kind and engine, its account's credentials,
a private working copy, the engine run. Shared by `pipelines-dagster execute` and the pipeline's dispatch step.
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..redact import default_redactor
from ..settings import DEFAULT_OIDC_AUDIENCE
from .credentials import CredentialProvider, CredentialsError, DeployedAccount, session_name
from .engine import force_unlock_in_workdir, run_in_workdir
from .engine_settings import EngineSettings
from .isolation.access import IsolationError
from .isolation.run_folder import RunFolder
from .isolation.users import resolve_unit_user
from .model import Action, Event, Result, Status, UnitKind
from .repo_files import PipelinesConfig
from .trust import TrustedConfig, trusted_config

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
    from ..integrations.git_tree import list_folders

    files = list_folders(repo, sha, [unit])
    if not files:
        return None
    return UnitKind.TERRAGRUNT if f"{unit}/terragrunt.hcl" in files else UnitKind.TERRAFORM


class Executor:
    """Runs infra-changes of one repository. `config` decides engines; `credentials_config` (trusted: read from
    the deploy branch's head) decides accounts and roles, and which commits are the deploy branch's: only the
    commit a unit is checked out at decides whether its account's apply role may be used. Without accounts or a
    provider, units use ambient credentials."""

    def __init__(self, repo, *, config: PipelinesConfig | None = None,
                 credentials_config: TrustedConfig | None = None, provider: CredentialProvider | None = None,
                 settings: EngineSettings | None = None, location: str | None = None):
        """`location`: the repository as the deployment names it (a URL or path), for recovery commands."""
        self.repo, self.location = repo, location
        self.config = config or PipelinesConfig()
        self.credentials_config = credentials_config
        self.provider = provider
        self.settings = settings or EngineSettings()
        self._deploy_commits: dict[str, bool] = {}

    def on_deploy_branch(self, commit: str) -> bool:
        """Whether the deploy branch itself was at `commit` (its first-parent line, as read with the trusted
        configuration)."""
        from ..integrations.git import on_first_parent_line

        tip = self.credentials_config.sha if self.credentials_config is not None else ""
        if commit not in self._deploy_commits:
            self._deploy_commits[commit] = bool(tip) and on_first_parent_line(self.repo, commit, tip)
        return self._deploy_commits[commit]

    def execute(self, request: ExecuteRequest) -> Result:
        started = time.monotonic()
        result = self._execute(request)
        result.duration_s = time.monotonic() - started
        return result

    def _execute(self, req: ExecuteRequest) -> Result:
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

        credentials = self._credentials(req.unit, event, commit, req.head, req.pr)
        if isinstance(credentials, Result):
            credentials.action, credentials.commit = action.value, commit
            return credentials
        credentials_env, account_name, role_arn, redactor = credentials
        result = self._in_run_folder(commit, lambda folder: run_in_workdir(
            folder, req.unit, action, engine, credentials_env=credentials_env, settings=self.settings,
            redactor=redactor, commit=commit))
        result.unit, result.action, result.commit = req.unit, action.value, commit
        result.account, result.role_arn = account_name, role_arn
        if result.lock is not None and result.lock.stale:
            result.message = redactor(self.stale_lock_message(result, account_name, engine))
        return result

    def force_unlock(self, unit: str, lock_id: str, head: str) -> Result:
        """`force-unlock -force <lock_id>` in `unit` at `head` (a deploy-branch commit) with its account's apply
        role: the recovery from a stale state lock."""
        def failed(message: str) -> Result:
            return Result(status=Status.FAILED, unit=unit, action="force-unlock", commit=head,
                          message=default_redactor()(message))

        kind = unit_kind(self.repo, head, unit)
        if kind is None:
            return failed(f"unit {unit} does not exist at commit {head[:12]}")
        engine = self.config.engine_for(unit, kind)
        credentials = self._credentials(unit, Event.PUSH, head, head, None)
        if isinstance(credentials, Result):
            credentials.action, credentials.commit = "force-unlock", head
            return credentials
        credentials_env, account_name, role_arn, redactor = credentials
        result = self._in_run_folder(head, lambda folder: force_unlock_in_workdir(
            folder, unit, lock_id, engine, credentials_env=credentials_env, settings=self.settings,
            redactor=redactor, commit=head))
        result.unit, result.action, result.commit = unit, "force-unlock", head
        result.account, result.role_arn = account_name, role_arn
        return result

    def stale_lock_message(self, result: Result, account: str | None, engine: str) -> str:
        lock = result.lock
        assert lock is not None, "a result with a state lock"
        repo = self.location or str(self.repo)
        role = f"account {account}'s apply role" if account else "the ambient credentials"
        return (f"the state lock ID {lock.id} is stale (held by {lock.who} since {lock.created}, {lock.stale}): "
                f"recover with `pipelines-dagster unlock --repo {repo} --unit {result.unit} --lock-id {lock.id}`, "
                f"which runs `{engine} force-unlock -force {lock.id}` in {result.unit} with {role}")

    def _credentials(self, unit: str, event: Event, commit: str, head: str, pr: int | None):
        """(credentials_env, account, role ARN, redactor) for the unit's account, to run at `commit` (the run's
        `head`, or its base for a destroy), or a failed Result."""
        credentials_env = None
        account_name = role_arn = None
        secrets: list[str] = []
        trusted = self.credentials_config
        if trusted is not None and trusted.accounts is not None and self.provider is not None:
            account_name = trusted.config.account_for(unit, trusted.accounts)
            account = trusted.accounts.entries.get(account_name) if account_name else None
            if account_name is None or account is None:
                return Result(status=Status.FAILED, unit=unit, message=default_redactor()(
                    f"unit {unit} belongs to account {account_name!r}, which is not in {trusted.accounts.file} on "
                    "the deploy branch: no credentials for it"))
            try:
                creds = self.provider.for_account(account_name, account, event,
                                                  on_deploy_branch=self.on_deploy_branch(commit),
                                                  session=session_name(head, pr), commit=commit)
            except CredentialsError as exc:
                return Result(status=Status.FAILED, unit=unit, message=default_redactor()(str(exc)),
                              account=account_name, transient=exc.transient)
            credentials_env, role_arn = creds.child_env(), creds.role_arn
            secrets = creds.secrets()
        redactor = default_redactor(*secrets, *(self.provider.recent_tokens if self.provider else ()))
        return credentials_env, account_name, role_arn, redactor

    def _in_run_folder(self, commit: str, work) -> Result:
        """`work(folder)` in a fresh run folder holding a checkout of `commit`, owned by the unit user."""
        from ..integrations.git import GitError
        from ..integrations.git_tree import UnsafeCheckout, checkout

        def failed(message: str) -> Result:
            return Result(status=Status.FAILED, message=default_redactor()(message))

        user = None
        try:
            user = resolve_unit_user(self.settings.unit_user, self.settings.work_dir)
            folder = RunFolder.create(self.settings.work_dir, user)
        except (IsolationError, OSError) as exc:
            if user is not None:
                user.release()
            return failed(f"cannot prepare the unit's run folder: {exc}")
        try:
            try:
                checkout(self.repo, commit, folder.src, owner=(user.uid, user.gid) if user else None)
            except UnsafeCheckout as exc:
                return failed(str(exc))
            except GitError as exc:
                return failed(f"cannot check out {commit[:12]}: {exc}")
            return work(folder)
        finally:
            if not self.settings.keep_workdir:
                folder.remove()
            elif user is not None:
                user.release()


@dataclass
class CommitExecutor:
    """An executor for one head commit, with the deploy-branch facts that decide its credentials."""

    executor: Executor
    on_deploy_branch: bool
    deploy_branch: str
    notices: list[str]


def prepare(repo, head: str, *, deploy_branch: str | None = None, settings: EngineSettings | None = None,
            token_source=None, region: str | None = None, location: str | None = None,
            audience: str = DEFAULT_OIDC_AUDIENCE, deployed: Mapping[str, DeployedAccount] | None = None
            ) -> CommitExecutor:
    """Everything between "run this commit" and an Executor: engines, accounts and roles from the deploy branch
    (a pull request must not choose its own engines or credentials), whether the commit is on the deploy branch,
    and the deployment's OIDC token source. `deploy_branch` is the deployment's override; `deployed`: the accounts
    as the code location knows them (see CredentialProvider). ConfigError when the deploy branch or its
    configuration is unusable."""
    from .credentials import token_source_from_env

    trusted = trusted_config(repo, deploy_branch)
    token_source = token_source if token_source is not None else token_source_from_env(audience=audience)
    notices, provider = [], None
    if trusted.accounts is not None and token_source is not None:
        provider = CredentialProvider(token_source, trusted.config.roles, deploy_branch=trusted.branch, region=region,
                                      deployed=deployed)
    elif trusted.accounts is not None:
        notices.append("no OIDC token source configured (PIPELINES_WEB_IDENTITY_TOKEN_FILE, "
                       "AWS_WEB_IDENTITY_TOKEN_FILE, GitHub Actions, PIPELINES_WEB_IDENTITY_TOKEN_COMMAND): "
                       "using ambient credentials")
    executor = Executor(repo, config=trusted.config, credentials_config=trusted, provider=provider,
                        settings=settings or EngineSettings(), location=location)
    return CommitExecutor(executor, executor.on_deploy_branch(head), trusted.branch, notices)
