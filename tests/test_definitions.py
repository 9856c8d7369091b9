"""The Dagster code location loads, the way `dagster dev` loads it (workspace.yaml)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_object():
    from pipelines_dagster.definitions import defs

    assert isinstance(defs(), dg.Definitions)


def test_workspace_validates_with_the_dagster_cli(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location pipelines_dagster" in proc.stderr + proc.stdout
