"""The demo started as `make run` starts it, from a folder prepared the way its first start prepares it."""

import os
import time
from pathlib import Path

import psutil
import pytest

from pipelines_dagster.demo.run import create, environment
from pipelines_dagster.integrations.git import open_git_dir
from pipelines_dagster.settings import Settings


@pytest.fixture
def prepared_demo(tmp_path) -> Path:
    """A demo folder as the first start leaves it, without the initial apply's Terraform runs: these tests are
    about starting and stopping (test_demo.py covers the initial apply), and the sensors apply nothing that is
    already on main. The remote's mirror is made as the initial apply makes it, so that the code location has the
    demo's accounts from its first load."""
    folder = tmp_path / "demo"
    demo = create(folder)
    settings = Settings.from_env(environment(demo, "http://127.0.0.1:1", 3000))
    open_git_dir(settings.repo_url, cache_root=settings.cache_root, timeout_s=settings.git_timeout_s)
    demo.record(applied=True)
    return folder


def demo_environment() -> dict[str, str]:
    """The environment of a person's terminal: none of the pipeline's settings, and no outer make's."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PIPELINES_", "DAGSTER_", "GITHUB_")) and k not in ("MAKEFLAGS", "MFLAGS",
                                                                                        "MAKELEVEL")}


def wait_for_text(read, text: str, alive, timeout_s: float) -> str:
    """The output (`read()`) once it holds `text`; fails when `alive()` turns false or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = read()
        if text in output:
            return output
        assert alive(), f"the demo exited before printing {text!r}:\n{output}"
        time.sleep(0.2)
    pytest.fail(f"no {text!r} within {timeout_s} s:\n{read()}")


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
