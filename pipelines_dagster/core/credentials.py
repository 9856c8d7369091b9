"""Per-account AWS credentials through OIDC: token sources, role choice, AssumeRoleWithWebIdentity, caching.

Credentials are returned as a mapping for one child process's environment and never stored in `os.environ`.
The apply role is only assumed for push events on commits that are on the deploy branch; pull requests get
the (read-only) plan role.
"""

import json
import os
import random
import re
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..settings import DEFAULT_OIDC_AUDIENCE
from .model import Event
from .repo_files import Account, RolesConfig

REFRESH_MARGIN_S = 300  # cached credentials are renewed five minutes before they expire
SESSION_NAME_RE = re.compile(r"[^\w+=,.@-]")
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "SlowDown", "IDPCommunicationError",
})
TOKEN_FILE_VARS = ("PIPELINES_WEB_IDENTITY_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
TOKEN_COMMAND_VAR = "PIPELINES_WEB_IDENTITY_TOKEN_COMMAND"


class CredentialsError(Exception):
    """Credentials could not be obtained or were refused; the message is safe to show (no secrets). `transient`:
    STS kept throttling, or could not be reached; trying again later may succeed."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# --------------------------------------------------------------------------------------------- token sources


class TokenSource:
    """Something that produces an OIDC token (a JWT) on demand."""

    @property
    def description(self) -> str:
        return "token source"

    def token(self) -> str:
        raise NotImplementedError


@dataclass
class FileTokenSource(TokenSource):
    """A token file, re-read on every use: projected service-account tokens rotate."""

    path: str

    @property
    def description(self) -> str:
        return f"token file {self.path}"

    def token(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as fh:
                if os.geteuid() == 0 and os.fstat(fh.fileno()).st_mode & 0o077:  # units run as other users then
                    raise CredentialsError(f"the OIDC token file {self.path} can be read by other users (mode "
                                           f"{os.fstat(fh.fileno()).st_mode & 0o777:o}): units, which run as "
                                           "other users, could read it; make it readable by its owner only (0600)")
                value = fh.read().strip()
        except OSError as exc:
            raise CredentialsError(f"cannot read the OIDC token file {self.path}: {exc.strerror}") from exc
        if not value:
            raise CredentialsError(f"the OIDC token file {self.path} is empty")
        return value


@dataclass
class GitHubActionsTokenSource(TokenSource):
    """The GitHub Actions OIDC endpoint (a job with `permissions: id-token: write`)."""

    request_url: str
    request_token: str = field(repr=False)
    audience: str = DEFAULT_OIDC_AUDIENCE
    timeout_s: float = 30.0
    description = "GitHub Actions OIDC"

    def token(self) -> str:
        parts = urllib.parse.urlsplit(self.request_url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k != "audience"] + [("audience", self.audience)]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        request = urllib.request.Request(url, headers={"Authorization": f"bearer {self.request_token}",
                                                       "Accept": "application/json; api-version=2.0"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise CredentialsError(f"GitHub Actions OIDC token request failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CredentialsError(f"GitHub Actions OIDC token request failed: {exc}") from exc
        value = body.get("value") if isinstance(body, dict) else None
        if not value:
            raise CredentialsError("GitHub Actions OIDC token response has no 'value'")
        return value


@dataclass
class CommandTokenSource(TokenSource):
    """A command that prints a token on standard output (run without a shell)."""

    command: str
    timeout_s: float = 60.0

    @property
    def description(self) -> str:
        return f"token command {shlex.split(self.command)[0] if self.command.strip() else ''!r}"

    def token(self) -> str:
        try:
            proc = subprocess.run(shlex.split(self.command), capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            raise CredentialsError(f"OIDC token command failed: {exc}") from exc
        if proc.returncode != 0:
            # stderr is not shown: a failing token helper may print anything, including a token
            raise CredentialsError(f"OIDC token command exited with {proc.returncode}")
        value = proc.stdout.strip()
        if not value:
            raise CredentialsError("OIDC token command printed nothing")
        return value


def token_source_from_env(env: Mapping[str, str] | None = None,
                          audience: str = DEFAULT_OIDC_AUDIENCE) -> TokenSource | None:
    """The configured token source: a token file, else GitHub Actions, else a token command; None if none.

    These are deployment settings (environment), never repository settings: a pull request must not be able to
    choose how the pipeline obtains its identity.
    """
    env = os.environ if env is None else env
    for var in TOKEN_FILE_VARS:
        if env.get(var):
            return FileTokenSource(env[var])
    if env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        return GitHubActionsTokenSource(env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"],
                                        audience=audience)
    if env.get(TOKEN_COMMAND_VAR):
        return CommandTokenSource(env[TOKEN_COMMAND_VAR])
    return None


# --------------------------------------------------------------------------------------------- roles


def role_kind(event: Event) -> str:
    """'plan' for pull requests, 'apply' for pushes."""
    return "apply" if Event(event) is Event.PUSH else "plan"


def role_arn_for(account: Account, kind: str, roles: RolesConfig) -> str:
    """The account's full-ARN override, else arn:aws:iam::<id>:role/<name> (a name may itself be an ARN)."""
    override = account.apply_role_arn if kind == "apply" else account.plan_role_arn
    if override:
        return override
    name = roles.apply if kind == "apply" else roles.plan
    if name.startswith("arn:"):
        return name
    return f"arn:aws:iam::{account.id}:role/{name.strip('/')}"


def session_name(sha: str | None = None, pr: int | str | None = None, prefix: str = "pipelines") -> str:
    """A RoleSessionName naming the PR and/or commit for CloudTrail: [\\w+=,.@-], 2 to 64 characters."""
    parts = [prefix]
    if pr not in (None, ""):
        parts.append(f"pr{pr}")
    if sha:
        parts.append(sha[:12] if pr in (None, "") else sha[:8])
    name = SESSION_NAME_RE.sub("-", "-".join(parts))[:64]
    return name if len(name) >= 2 else (name + "--")[:2]


def choose_role(account_name: str, plan_role_arn: str, apply_role_arn: str, event: Event | str, *,
                on_deploy_branch: bool, deploy_branch: str, commit: str | None = None) -> str:
    """The plan role for pull requests; the apply role for pushes, only for commits on the deploy branch; never
    the apply role in place of a plan role. CredentialsError says why a role is refused."""
    if role_kind(Event(event)) == "apply":
        if not on_deploy_branch:
            what = f"commit {commit[:12]}" if commit else "this commit"
            raise CredentialsError(
                f"refusing to assume the apply role of account {account_name!r}: {what} is not on the deploy "
                f"branch {deploy_branch!r} (apply roles are only used for commits on the deploy branch)")
        return apply_role_arn
    if plan_role_arn == apply_role_arn:
        raise CredentialsError(f"account {account_name!r}: the plan role is configured as the apply role "
                               f"({plan_role_arn}); refusing to use it for a pull request")
    return plan_role_arn


# --------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    role_arn: str
    account: str | None = None
    session_name: str | None = None
    region: str | None = None

    def child_env(self) -> dict[str, str]:
        """The variables to put into one child process's environment."""
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }
        if self.region:
            env["AWS_REGION"] = self.region
            env["AWS_DEFAULT_REGION"] = self.region
        return env

    def secrets(self) -> list[str]:
        return [self.access_key_id, self.secret_access_key, self.session_token]


@dataclass(frozen=True)
class DeployedAccount:
    """An account as a code location loaded it (its resource): what the deploy branch must still say."""

    id: str
    plan_role_arn: str
    apply_role_arn: str


class CredentialProvider:
    """Assumes per-account roles with a web identity token; thread-safe; caches until five minutes before expiry.
    With `deployed` (the accounts a code location loaded), an account that the deploy branch no longer describes
    the same way (the accounts file changed since) gets no credentials until the code location is reloaded."""

    def __init__(self, token_source: TokenSource, roles: RolesConfig | None = None, *,
                 deploy_branch: str = "main", region: str | None = None, endpoint_url: str | None = None,
                 sts_client=None, max_attempts: int = 6, backoff_s: float = 0.5,
                 deployed: Mapping[str, DeployedAccount] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.token_source = token_source
        self.deployed = deployed
        self.roles = roles or RolesConfig()
        self.deploy_branch = deploy_branch
        self.region = region
        self.endpoint_url = endpoint_url
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self._clock = clock
        self._sleep = sleep
        self._sts = sts_client
        self._cache: dict[tuple, AwsCredentials] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self.recent_tokens: deque[str] = deque(maxlen=8)  # tokens handed to STS, for exact redaction by callers

    # -- public

    def for_account(self, account_name: str, account: Account, event: Event | str, *, on_deploy_branch: bool,
                    session: str, commit: str | None = None) -> AwsCredentials:
        """Credentials of the plan role (pull_request) or the apply role (push on the deploy branch)."""
        plan_arn, apply_arn = role_arn_for(account, "plan", self.roles), role_arn_for(account, "apply", self.roles)
        if self.deployed is not None and self.deployed.get(account_name) != DeployedAccount(account.id, plan_arn,
                                                                                          apply_arn):
            what = "has no resource in this code location" if account_name not in self.deployed else \
                "differs from its resource"
            raise CredentialsError(f"account {account_name!r} on the deploy branch {what} (the accounts file "
                                   "changed after the code location loaded): reload the code location")
        role_arn = choose_role(account_name, plan_arn, apply_arn, event, on_deploy_branch=on_deploy_branch,
                               deploy_branch=self.deploy_branch, commit=commit)
        return self.assume(role_arn, session, account_name, account.region or self.region)

    def assume(self, role_arn: str, session: str, account_name: str, region: str | None) -> AwsCredentials:
        """A role's credentials through the web identity token, cached until five minutes before they expire."""
        key = (role_arn, session)
        with self._lock:
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expiration.timestamp() - REFRESH_MARGIN_S > self._clock():
                return cached
            creds = self._assume(role_arn, session, account_name, region)
            self._cache[key] = creds
            return creds

    # -- STS

    def _client(self):
        if self._sts is None:
            import boto3
            from botocore.config import Config

            # Retries are ours (throttling only, with backoff); botocore's would also retry other errors.
            config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30)
            # endpoint_url=None lets boto3 honour AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_STS.
            self._sts = boto3.session.Session().client("sts", region_name=self.region or "us-east-1",
                                                       endpoint_url=self.endpoint_url, config=config)
        return self._sts

    def _assume(self, role_arn: str, session: str, account_name: str, region: str | None) -> AwsCredentials:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.exceptions import ConnectionError as EndpointUnreachable

        client = self._client()
        attempt = 0
        while True:
            attempt += 1
            token = self.token_source.token()  # re-read every attempt: file tokens rotate
            if token not in self.recent_tokens:
                self.recent_tokens.append(token)
            try:
                response = client.assume_role_with_web_identity(
                    RoleArn=role_arn, RoleSessionName=session, WebIdentityToken=token,
                    DurationSeconds=self.roles.session_duration_s)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code", "Unknown")
                if code in THROTTLING_CODES and attempt < self.max_attempts:
                    delay = min(self.backoff_s * 2 ** (attempt - 1), 20.0)
                    self._sleep(delay * (0.5 + random.random() / 2))
                    continue
                message = error.get("Message") or str(exc)
                raise CredentialsError(f"AssumeRoleWithWebIdentity for {role_arn} (account {account_name!r}) "
                                       f"failed: {code}: {message}", transient=code in THROTTLING_CODES) from None
            except BotoCoreError as exc:
                raise CredentialsError(f"AssumeRoleWithWebIdentity for {role_arn} (account {account_name!r}) "
                                       f"failed: {exc}", transient=isinstance(exc, EndpointUnreachable)) from None
            c = response["Credentials"]
            expiration = c["Expiration"]
            if isinstance(expiration, str):
                expiration = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=UTC)
            return AwsCredentials(access_key_id=c["AccessKeyId"], secret_access_key=c["SecretAccessKey"],
                                  session_token=c["SessionToken"], expiration=expiration, role_arn=role_arn,
                                  account=account_name, session_name=session, region=region)
