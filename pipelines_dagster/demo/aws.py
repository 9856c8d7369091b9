"""An AWS emulator for the embedded default and the tests: moto's server on 127.0.0.1 (STS, S3 state buckets,
DynamoDB lock tables), used per account as AWS is, and what Terraform 1.0.3's s3 backend needs to reach it.

moto keeps resources per account: an account's state bucket and lock table are created with credentials of a role
assumed in that account. moto keeps everything in memory; `save_states`/`restore_states` carry the Terraform
state objects across restarts (lock items are not kept: a lock never outlives the processes that held it). A save
never goes back: a saved state is only replaced by a newer one of the same lineage, and each file atomically.
"""

import json
import logging
import os
import tempfile
from contextlib import suppress
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

    def save_states(self, account_ids, folder: Path) -> "SavedStates":
        """Every object of the accounts' state buckets as <folder>/<account id>/<key>, never going back: a saved
        Terraform state is only replaced by one of the same lineage and a higher serial (a lower one is the stale
        copy, the saved one is kept). A state of another lineage is another state, not an older or newer one: the
        emulator's is what Terraform last wrote, so it is saved, and the saved one it replaces is kept beside the
        folder, in <folder>.replaced/<account id>/<key>.<lineage>.<serial>. Each file is written whole to a
        temporary file in its folder, synced and renamed over the old one: a save cut short leaves every file
        whole. Objects saved before and missing from the emulator are kept."""
        result = SavedStates(folder)
        for account_id in account_ids:
            s3 = self.client("s3", account_id)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=state_bucket(account_id)):
                for item in page.get("Contents", []):
                    body = s3.get_object(Bucket=state_bucket(account_id), Key=item["Key"])["Body"].read()
                    result.save(account_id, item["Key"], body)
        return result

    def restore_states(self, account_ids, folder: Path) -> int:
        """Puts back what `save_states` wrote (into prepared accounts); returns how many objects."""
        count = 0
        for account_id in account_ids:
            self.prepare_account(account_id)
            saved = folder / account_id
            if not saved.is_dir():
                continue
            s3 = self.client("s3", account_id)
            for path in sorted(p for p in saved.rglob("*") if p.is_file() and not _is_temporary(p)):
                s3.put_object(Bucket=state_bucket(account_id), Key=path.relative_to(saved).as_posix(),
                              Body=path.read_bytes())
                count += 1
        return count


class SavedStates:
    """One save of the emulator's objects into a folder (see `Aws.save_states`): what it did, and why."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0  # the emulator's objects now on disk (written, or already there)
        self.written: list[str] = []
        self.notes: list[str] = []  # each state not saved as it was in the emulator, and why

    def save(self, account_id: str, key: str, body: bytes) -> None:
        target = self.folder / account_id / key
        name = f"{account_id}/{key}"
        self.count += 1
        old = target.read_bytes() if target.is_file() else None
        if old == body:
            return
        new_state, old_state = _state(body), _state(old)
        if new_state and old_state:
            if new_state["lineage"] == old_state["lineage"]:
                if new_state["serial"] < old_state["serial"]:
                    self.notes.append(f"kept the saved state of {name} (serial {old_state['serial']}): the "
                                      f"emulator's is older (serial {new_state['serial']})")
                    return
            else:
                assert old is not None
                aside = self.folder.with_name(self.folder.name + ".replaced") / account_id / (
                    f"{key}.{old_state['lineage']}.{old_state['serial']}")
                write_atomically(aside, old)
                self.notes.append(f"the state of {name} in the emulator has another lineage "
                                  f"({new_state['lineage']}, serial {new_state['serial']}) than the saved one "
                                  f"({old_state['lineage']}, serial {old_state['serial']}): saved the emulator's, "
                                  f"kept the other in {aside}")
        write_atomically(target, body)
        self.written.append(name)


def _state(body: bytes | None) -> dict | None:
    """A Terraform state's lineage and serial, or None for anything else."""
    if body is None:
        return None
    try:
        state = json.loads(body)
    except ValueError:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("lineage"), str) or not isinstance(
            state.get("serial"), int):
        return None
    return {"lineage": state["lineage"], "serial": state["serial"]}


TEMPORARY_SUFFIX = ".saving"


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


def write_atomically(path: Path, data: bytes) -> None:
    """`data` as `path`, whole or not at all: written to a temporary file in the same folder, synced to disk and
    renamed over `path` (a rename within a folder is atomic), then the folder synced so that the rename lasts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
