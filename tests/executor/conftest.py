"""Helpers of the executor tests."""

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def drop_box():
    """A folder every user may write (units may run as another user, which cannot reach pytest's 0700 folders)."""
    path = Path(tempfile.mkdtemp(prefix="pipelines-test-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
