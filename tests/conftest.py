"""Real parts shared by the tests: Terraform 1.0.3 with the null provider offline, a moto server (STS, S3 state,
DynamoDB locks) on 127.0.0.1, and real git repositories."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pipelines_dagster.core.credentials import CredentialProvider, FileTokenSource
from pipelines_dagster.core.engine_settings import EngineSettings
from pipelines_dagster.core.executor import Executor
from pipelines_dagster.core.trust import trusted_config
from pipelines_dagster.demo.aws import LOCK_TABLE, REGION, Aws, MotoServer, backend_settings, state_bucket
from pipelines_dagster.demo.aws import UNVERIFIED_TOKEN as OIDC_TOKEN
from pipelines_dagster.demo.terraform import install_null_provider, terraform_binary, write_cli_config

__all__ = ["LOCK_TABLE", "OIDC_TOKEN", "REGION", "Aws", "terraform_binary"]  # used by the tests' modules

ACCOUNTS = {"dev": "111111111111", "prod": "222222222222"}


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    return install_null_provider(tmp_path_factory.mktemp("plugins"))


@pytest.fixture(scope="session")
def tf_cli_config(tmp_path_factory) -> Path:
    return write_cli_config(tmp_path_factory.mktemp("tfrc") / "terraformrc")


@pytest.fixture(scope="session")
def moto_endpoint():
    with MotoServer() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def aws_session(moto_endpoint) -> Aws:
    aws = Aws(moto_endpoint)
    for account_id in ACCOUNTS.values():
        aws.prepare_account(account_id)
    return aws


@pytest.fixture
def aws(aws_session, monkeypatch) -> Aws:
    # boto3 in the code under test reaches the emulator through the standard variable, as in production.
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_session.endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    return aws_session


def s3_backend(endpoint: str, account: str, key: str) -> str:
    """An s3 backend block for Terraform 1.0.3 pointed at the emulator (it ignores AWS_ENDPOINT_URL)."""
    settings = {"bucket": state_bucket(ACCOUNTS.get(account, account)), "key": key, "region": REGION,
                "dynamodb_table": LOCK_TABLE, **backend_settings(endpoint)}
    lines = "".join(f"    {name:<27} = {json.dumps(value)}\n" for name, value in settings.items())
    return f'terraform {{\n  backend "s3" {{\n{lines}  }}\n}}\n'


def null_unit(endpoint: str, unit: str, count: int = 2, trigger: str = "v1", extra: str = "") -> str:
    """A root module with `count` null resources and one output, its state at <unit>/terraform.tfstate."""
    account = unit.split("/", 1)[0]
    return s3_backend(endpoint, account, f"{unit}/terraform.tfstate") + f'''
resource "null_resource" "item" {{
  count    = {count}
  triggers = {{ version = "{trigger}" }}
}}

output "items" {{
  value = length(null_resource.item)
}}
{extra}'''


def accounts_yml() -> str:
    return "".join(f'{name}:\n  id: "{account_id}"\n  email: {name}@example.com\n'
                   for name, account_id in ACCOUNTS.items())


class GitRepo:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "tests@example.com")
        self.git("config", "user.name", "tests")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True,
                              text=True).stdout.strip()

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    r = GitRepo(tmp_path / "live")
    r.commit({"accounts.yml": accounts_yml(), ".pipelines.yml": "deploy_branch: main\n"}, "accounts")
    return r


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "oidc-token"
    path.write_text(OIDC_TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def settings(plugin_dir, tf_cli_config, tmp_path) -> EngineSettings:
    runs = tmp_path / "runs"
    runs.mkdir()
    return EngineSettings(binaries={"terraform": terraform_binary()}, tf_plugin_dir=str(plugin_dir),
                          env={"TF_CLI_CONFIG_FILE": str(tf_cli_config)}, action_timeout_s=120, plan_grace_s=2,
                          work_dir=str(runs), holders_dir=str(tmp_path / "lock-holders"))


@pytest.fixture
def make_executor(repo, aws, token_file, settings):
    """An Executor as the pipeline builds one: credentials config from the deploy branch, a token file."""

    def make(**overrides) -> Executor:
        trusted = trusted_config(repo.path / ".git", "main")
        provider = CredentialProvider(FileTokenSource(str(token_file)), trusted.config.roles, deploy_branch="main")
        return Executor(repo.path / ".git", config=trusted.config, credentials_config=trusted, provider=provider,
                        settings=overrides.pop("settings", settings), **overrides)

    return make


def env_file(path: Path) -> dict:
    """`env` output written by a child process."""
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


@pytest.fixture
def drop_box():
    """A folder every user may write (units may run as another user, which cannot reach pytest's 0700 folders)."""
    path = Path(tempfile.mkdtemp(prefix="pipelines-test-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cli_env(aws, plugin_dir, tf_cli_config, token_file, tmp_path) -> dict:
    """The environment of the `pipelines-dagster execute` command in the tests."""
    return {
        "PATH": f"{Path(terraform_binary()).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PIPELINES_CACHE_DIR": str(tmp_path / "cache"),
        "PIPELINES_TF_PLUGIN_DIR": str(plugin_dir),
        "PIPELINES_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_REGION": "us-east-1",
        "TF_CLI_CONFIG_FILE": str(tf_cli_config),
        "TMPDIR": str(tmp_path),
    }
