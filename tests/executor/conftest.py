"""Helpers of the executor tests."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import terraform_binary


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
