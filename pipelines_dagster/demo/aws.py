"""An AWS emulator for the embedded default and the tests: moto's server on 127.0.0.1 (STS, S3 state buckets,
DynamoDB lock tables), used per account as AWS is, and what Terraform 1.0.3's s3 backend needs to reach it.

moto keeps resources per account: an account's state bucket and lock table are created with credentials of a role
assumed in that account. moto keeps everything in memory; `save_states`/`restore_states` carry the Terraform
state objects across restarts (lock items are not kept: a lock never outlives the processes that held it).
"""

import json
import logging
import shutil
from pathlib import Path

import boto3

REGION = "us-east-1"
LOCK_TABLE = "tflocks"
# JWT-shaped, as a real OIDC token is: moto does not verify web identity tokens, redaction must still spot it.
UNVERIFIED_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvbGl2ZSJ9.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def state_bucket(account_id: str) -> str:
    return f"tfstate-{account_id}"


def backend_settings(endpoint: str) -> dict[str, str | bool]:
    """s3 backend settings that point Terraform 1.0.3 at the emulator (it does not read AWS_ENDPOINT_URL)."""
    return {"endpoint": endpoint, "dynamodb_endpoint": endpoint, "sts_endpoint": endpoint, "iam_endpoint": endpoint,
            "force_path_style": True, "skip_credentials_validation": True, "skip_metadata_api_check": True,
            "skip_region_validation": True}


def backend_config_args(endpoint: str) -> str:
    """The same settings as `terraform init` arguments, for TF_CLI_ARGS_init: units keep a production backend."""
    return " ".join(f"-backend-config={key}={str(value).lower() if isinstance(value, bool) else value}"
                    for key, value in backend_settings(endpoint).items())


class MotoServer:
    """moto's server in a thread of this process, on 127.0.0.1 (port 0: any free port)."""

    def __init__(self, port: int = 0):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint: str | None = None

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        if self.endpoint is not None:
            self._server.stop()
            self.endpoint = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


class Aws:
    """The emulator as a given account sees it (moto keeps resources per account)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._prepared: set[str] = set()

    def assume(self, account_id: str, role: str = "pipelines-admin", session: str = "pipelines-demo") -> dict:
        sts = boto3.client("sts", region_name=REGION, endpoint_url=self.endpoint)
        c = sts.assume_role_with_web_identity(RoleArn=f"arn:aws:iam::{account_id}:role/{role}",
                                              RoleSessionName=session, WebIdentityToken=UNVERIFIED_TOKEN)["Credentials"]
        return {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"],
                "aws_session_token": c["SessionToken"]}

    def client(self, service: str, account_id: str | None = None, creds: dict | None = None):
        if creds is None:
            assert account_id is not None, "an account id or credentials"
            creds = self.assume(account_id)
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, **creds)

    def caller_arn(self, env: dict) -> str:
        """GetCallerIdentity with the credentials found in a child's environment."""
        creds = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                 "aws_session_token": env["AWS_SESSION_TOKEN"]}
        return self.client("sts", creds=creds).get_caller_identity()["Arn"]

    bucket = staticmethod(state_bucket)

    def prepare_account(self, account_id: str) -> None:
        """The account's state bucket and lock table, created with that account's credentials."""
        if account_id in self._prepared:
            return
        creds = self.assume(account_id)
        s3 = self.client("s3", creds=creds)
        if state_bucket(account_id) not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            s3.create_bucket(Bucket=state_bucket(account_id))
        ddb = self.client("dynamodb", creds=creds)
        if LOCK_TABLE not in ddb.list_tables()["TableNames"]:
            ddb.create_table(TableName=LOCK_TABLE, BillingMode="PAY_PER_REQUEST",
                             KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                             AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
        self._prepared.add(account_id)

    def state(self, account_id: str, key: str) -> dict | None:
        s3 = self.client("s3", account_id)
        try:
            body = s3.get_object(Bucket=state_bucket(account_id), Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def save_states(self, account_ids, folder: Path) -> int:
        """Every object of the accounts' state buckets as <folder>/<account id>/<key>; returns how many.
        Written beside the folder first and swapped in, so an interrupted save leaves the last one whole."""
        staging = folder.with_name(folder.name + ".saving")
        _remove(staging)
        count = 0
        for account_id in account_ids:
            s3 = self.client("s3", account_id)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=state_bucket(account_id)):
                for item in page.get("Contents", []):
                    target = staging / account_id / item["Key"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(s3.get_object(Bucket=state_bucket(account_id), Key=item["Key"])["Body"].read())
                    count += 1
        staging.mkdir(parents=True, exist_ok=True)
        _remove(folder)
        staging.rename(folder)
        return count

    def restore_states(self, account_ids, folder: Path) -> int:
        """Puts back what `save_states` wrote (into prepared accounts); returns how many objects."""
        count = 0
        for account_id in account_ids:
            self.prepare_account(account_id)
            saved = folder / account_id
            if not saved.is_dir():
                continue
            s3 = self.client("s3", account_id)
            for path in sorted(p for p in saved.rglob("*") if p.is_file()):
                s3.put_object(Bucket=state_bucket(account_id), Key=path.relative_to(saved).as_posix(),
                              Body=path.read_bytes())
                count += 1
        return count


def _remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
