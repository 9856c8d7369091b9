"""OIDC token sources and per-account STS sessions, against the AWS emulator (and a stubbed STS for throttling)."""

import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from datetime import UTC

import boto3
import pytest
from botocore.stub import Stubber

from pipelines_dagster.core.credentials import (
    CommandTokenSource,
    CredentialProvider,
    CredentialsError,
    FileTokenSource,
    GitHubActionsTokenSource,
    role_arn_for,
    session_name,
    token_source_from_env,
)
from pipelines_dagster.core.repo_files import Account, RolesConfig
from tests.conftest import ACCOUNTS, OIDC_TOKEN

DEV = Account(id=ACCOUNTS["dev"])
PROD = Account(id=ACCOUNTS["prod"])


def test_token_file_is_read_again_on_every_use(tmp_path):
    path = tmp_path / "token"
    path.write_text("first-token-value\n")
    path.chmod(0o600)
    source = FileTokenSource(str(path))
    assert source.token() == "first-token-value"
    path.write_text("rotated-token-value")
    assert source.token() == "rotated-token-value"
    path.write_text("")
    with pytest.raises(CredentialsError, match="is empty"):
        source.token()
    path.unlink()
    with pytest.raises(CredentialsError, match="cannot read the OIDC token file"):
        source.token()


@pytest.mark.skipif(os.geteuid() != 0, reason="units run as other users only when the pipeline is root")
def test_a_token_file_other_users_can_read_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("readable-by-all")
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match=r"can be read by other users \(mode 644\).*0600"):
        FileTokenSource(str(path)).token()


def test_token_source_from_env_prefers_the_pipelines_file_then_aws_file_then_actions_then_command(tmp_path):
    both = {"PIPELINES_WEB_IDENTITY_TOKEN_FILE": "/p", "AWS_WEB_IDENTITY_TOKEN_FILE": "/a",
            "ACTIONS_ID_TOKEN_REQUEST_URL": "http://x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
            "PIPELINES_WEB_IDENTITY_TOKEN_COMMAND": "echo x"}
    assert token_source_from_env(both) == FileTokenSource("/p")
    del both["PIPELINES_WEB_IDENTITY_TOKEN_FILE"]
    assert token_source_from_env(both) == FileTokenSource("/a")
    del both["AWS_WEB_IDENTITY_TOKEN_FILE"]
    source = token_source_from_env(both)
    assert isinstance(source, GitHubActionsTokenSource) and source.audience == "sts.amazonaws.com"
    del both["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    assert token_source_from_env(both) == CommandTokenSource("echo x")
    assert token_source_from_env({}) is None


def test_github_actions_token_request_carries_the_audience_and_the_request_token():
    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen["query"] = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            seen["auth"] = self.headers.get("Authorization")
            body = json.dumps({"value": OIDC_TOKEN}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/token?api-version=2.0&audience=wrong"
        token = GitHubActionsTokenSource(url, "request-token-123").token()
    finally:
        server.shutdown()
        thread.join()
    assert token == OIDC_TOKEN
    assert seen["query"] == {"api-version": ["2.0"], "audience": ["sts.amazonaws.com"]}
    assert seen["auth"] == "bearer request-token-123"


def test_token_command_prints_the_token_and_failures_are_clear():
    assert CommandTokenSource(f"{sys.executable} -c 'print(\"cmd-token-value\")'").token() == "cmd-token-value"
    with pytest.raises(CredentialsError, match="exited with 3"):
        CommandTokenSource(f"{sys.executable} -c 'import sys; sys.exit(3)'").token()
    with pytest.raises(CredentialsError, match="printed nothing"):
        CommandTokenSource(f"{sys.executable} -c 'pass'").token()


def test_role_arns_from_account_id_and_role_names_with_per_account_overrides():
    roles = RolesConfig(plan="ci-read", apply="ci-write")
    assert role_arn_for(DEV, "plan", roles) == f"arn:aws:iam::{ACCOUNTS['dev']}:role/ci-read"
    assert role_arn_for(DEV, "apply", roles) == f"arn:aws:iam::{ACCOUNTS['dev']}:role/ci-write"
    custom = Account(id=ACCOUNTS["dev"], apply_role_arn="arn:aws:iam::111111111111:role/team/deployer")
    assert role_arn_for(custom, "apply", roles) == "arn:aws:iam::111111111111:role/team/deployer"
    assert role_arn_for(custom, "plan", roles) == f"arn:aws:iam::{ACCOUNTS['dev']}:role/ci-read"


@pytest.mark.parametrize("sha,pr", [("0123456789abcdef" * 2, 42), ("a" * 40, None), (None, "9" * 80),
                                    ("x", None), (None, None), ("bad sha!/*?", "7 ☃")])
def test_session_names_are_valid_for_sts(sha, pr):
    name = session_name(sha, pr)
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", name), name
    if pr == 42:
        assert name == "pipelines-pr42-01234567"
    if sha == "a" * 40:
        assert name == "pipelines-aaaaaaaaaaaa"


def test_plan_role_for_pull_requests_apply_role_for_pushes_each_in_its_account(aws, token_file):
    provider = CredentialProvider(FileTokenSource(str(token_file)), RolesConfig(), region="us-east-1")

    plan = provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="pipelines-pr3-abc")
    apply = provider.for_account("dev", DEV, "push", on_deploy_branch=True, session="pipelines-abc")
    prod = provider.for_account("prod", PROD, "pull_request", on_deploy_branch=False, session="pipelines-pr3-abc")

    def arn(creds):
        env = creds.child_env()
        return boto3.client("sts", region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=env["AWS_SESSION_TOKEN"]).get_caller_identity()["Arn"]

    assert arn(plan) == f"arn:aws:sts::{ACCOUNTS['dev']}:assumed-role/pipelines-plan/pipelines-pr3-abc"
    assert arn(apply) == f"arn:aws:sts::{ACCOUNTS['dev']}:assumed-role/pipelines-apply/pipelines-abc"
    assert arn(prod) == f"arn:aws:sts::{ACCOUNTS['prod']}:assumed-role/pipelines-plan/pipelines-pr3-abc"
    assert set(plan.child_env()) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                                     "AWS_DEFAULT_REGION"}
    assert plan.access_key_id not in repr(plan) and plan.secret_access_key not in repr(plan)


def test_apply_role_is_refused_for_a_commit_off_the_deploy_branch(aws, token_file):
    provider = CredentialProvider(FileTokenSource(str(token_file)), RolesConfig(), deploy_branch="release")
    with pytest.raises(CredentialsError, match=r"commit 0123456789ab is not on the deploy branch 'release'"):
        provider.for_account("dev", DEV, "push", on_deploy_branch=False, session="s1", commit="0123456789abcdef")


def test_a_plan_role_configured_as_the_apply_role_is_refused(aws, token_file):
    provider = CredentialProvider(FileTokenSource(str(token_file)), RolesConfig(plan="admin", apply="admin"))
    with pytest.raises(CredentialsError, match="plan role is configured as the apply role"):
        provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1")


def test_credentials_are_cached_per_account_and_role_until_five_minutes_before_expiry(aws, token_file):
    now = [time.time()]
    provider = CredentialProvider(FileTokenSource(str(token_file)), RolesConfig(session_duration_s=900),
                                  clock=lambda: now[0])
    first = provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1")
    assert provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1") is first
    other = provider.for_account("prod", PROD, "pull_request", on_deploy_branch=False, session="s1")
    assert other.access_key_id != first.access_key_id
    assert first.expiration.timestamp() == pytest.approx(now[0] + 900, abs=60)

    now[0] = first.expiration.timestamp() - 301
    assert provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1") is first
    now[0] = first.expiration.timestamp() - 299
    renewed = provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1")
    assert renewed is not first and renewed.access_key_id != first.access_key_id
    assert OIDC_TOKEN in provider.recent_tokens


def _stubbed_provider(token_file, sleeps):
    client = boto3.client("sts", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")  # never contacted
    stubber = Stubber(client)
    provider = CredentialProvider(FileTokenSource(str(token_file)), RolesConfig(), sts_client=client,
                                  sleep=sleeps.append, backoff_s=0.5)
    return provider, stubber


def _ok_response():
    from datetime import datetime, timedelta

    return {"Credentials": {"AccessKeyId": "ASIASTUBBEDEXAMPLE01", "SecretAccessKey": "s" * 40,
                            "SessionToken": "t" * 100,
                            "Expiration": datetime.now(UTC) + timedelta(hours=1)}}


def test_throttling_is_retried_with_growing_backoff(token_file):
    sleeps: list[float] = []
    provider, stubber = _stubbed_provider(token_file, sleeps)
    stubber.add_client_error("assume_role_with_web_identity", "Throttling", "Rate exceeded", 400)
    stubber.add_client_error("assume_role_with_web_identity", "ThrottlingException", "Rate exceeded", 400)
    stubber.add_response("assume_role_with_web_identity", _ok_response())
    with stubber:
        creds = provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1")
    assert creds.access_key_id == "ASIASTUBBEDEXAMPLE01"
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2 and 0.25 <= sleeps[0] <= 0.5
    stubber.assert_no_pending_responses()


def test_throttling_that_outlasts_the_backoff_fails_as_transient(token_file):
    sleeps: list[float] = []
    provider, stubber = _stubbed_provider(token_file, sleeps)
    for _ in range(provider.max_attempts):
        stubber.add_client_error("assume_role_with_web_identity", "Throttling", "Rate exceeded", 400)
    with stubber, pytest.raises(CredentialsError) as err:
        provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1")
    assert err.value.transient and "Throttling: Rate exceeded" in str(err.value)
    assert len(sleeps) == provider.max_attempts - 1
    stubber.assert_no_pending_responses()


def test_other_sts_errors_fail_at_once_with_awss_message(token_file):
    sleeps: list[float] = []
    provider, stubber = _stubbed_provider(token_file, sleeps)
    stubber.add_client_error("assume_role_with_web_identity", "AccessDenied",
                             "Not authorized to perform sts:AssumeRoleWithWebIdentity", 403)
    with stubber, pytest.raises(CredentialsError) as err:
        provider.for_account("dev", DEV, "pull_request", on_deploy_branch=False, session="s1")
    assert "AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity" in str(err.value)
    assert not err.value.transient  # retrying cannot help
    assert f"arn:aws:iam::{ACCOUNTS['dev']}:role/pipelines-plan" in str(err.value)
    assert sleeps == []
