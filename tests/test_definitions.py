"""The Dagster code location loads, the way `dagster dev` loads it (workspace.yaml)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext

from tests.conftest import GitRepo

ROOT = Path(__file__).resolve().parents[1]


def test_each_code_location_holds_its_role_and_nothing_of_the_other(tmp_path, monkeypatch):
    """On Kubernetes the apply identity is the apply location's: the plan location must offer nothing that applies,
    and the apply location nothing that plans a pull request's code."""
    from pipelines_dagster import apply_location, definitions, plan_location

    repo = GitRepo(tmp_path / "live")
    repo.commit({"accounts.yml": 'dev:\n  id: "111111111111"\n  email: dev@example.com\n',
                 "dev/app/main.tf": 'terraform {\n  backend "local" {}\n}\n'})
    monkeypatch.setenv("PIPELINES_REPO_URL", str(repo.path))
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))

    def held(module) -> tuple[set[str], set[str], set[str]]:
        DefinitionsLoadContext._instance = None  # as in a code server of its own
        repository = module.defs().get_repository_def()
        return ({j.name for j in repository.get_all_jobs() if not j.name.startswith("__")},
                {s.name for s in repository.sensor_defs},
                {k.to_user_string() for k in repository.asset_graph.get_all_asset_keys()})

    plan_jobs, plan_sensors, plan_assets = held(plan_location)
    apply_jobs, apply_sensors, apply_assets = held(apply_location)
    all_jobs, all_sensors, all_assets = held(definitions)
    assert plan_jobs == {"infrastructure_plan"} and plan_assets == set()
    assert plan_sensors == {"pull_request_sensor", "run_failure_sensor", "asset_graph_sensor"}
    assert apply_jobs == {"infrastructure_apply", "drift_detection"}
    assert apply_sensors == {"deploy_branch_sensor", "run_failure_sensor", "asset_graph_sensor"}
    assert apply_assets == {"accounts/dev", "units/dev/app"}
    assert (all_jobs, all_sensors, all_assets) == (plan_jobs | apply_jobs, plan_sensors | apply_sensors, apply_assets)


def test_workspace_validates_with_the_dagster_cli(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location pipelines_dagster" in proc.stderr + proc.stdout


def test_a_run_of_the_plan_or_apply_job_rebuilds_its_job_alone_and_the_same_job(tmp_path, monkeypatch):
    """Run workers and step processes reconstruct the code location from what the code server recorded. A plan or
    apply run gets its job without the unit assets (a step costs the same however many units the repository
    has), and exactly the job the code server offered; Materialize's job still gets the unit assets."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.reconstruct import ReconstructableRepository, initialize_repository_def_from_pointer
    from dagster._core.definitions.repository_definition import RepositoryLoadData

    from pipelines_dagster.defs.loading import ACCOUNTS_KEY, LINEAGE_KEY

    repo = GitRepo(tmp_path / "live")
    repo.commit({"accounts.yml": 'dev:\n  id: "111111111111"\n  email: dev@example.com\n',
                 **{f"dev/app{i}/main.tf": 'terraform {\n  backend "local" {}\n}\n' for i in range(3)}})
    monkeypatch.setenv("PIPELINES_REPO_URL", str(repo.path))
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    pointer = ModuleCodePointer("pipelines_dagster.definitions", "defs", str(ROOT))
    DefinitionsLoadContext._instance = None
    served = initialize_repository_def_from_pointer(pointer)
    recorded = served.repository_load_data
    assert recorded is not None and ACCOUNTS_KEY in recorded.reconstruction_metadata

    def reconstructed(job_name: str, lineage_state: str):
        DefinitionsLoadContext._instance = None  # a fresh process
        data = RepositoryLoadData(cacheable_asset_data={}, reconstruction_metadata={
            **recorded.reconstruction_metadata, LINEAGE_KEY: lineage_state})
        return ReconstructableRepository(pointer, repository_load_data=data).get_reconstructable_job(
            job_name).get_definition()

    # a lineage that cannot even be read: the plan and apply jobs never read the units
    for name in ("infrastructure_plan", "infrastructure_apply"):
        job = reconstructed(name, '"not a lineage"')
        assert job.get_job_snapshot_id() == served.get_job(name).get_job_snapshot_id()
        assert set(job.resource_defs) >= {"changes", "github", "infra_repo", "io_manager", "aws_dev"}
    with pytest.raises(ValueError):
        reconstructed("__ASSET_JOB", '"not a lineage"')
    assets = reconstructed("__ASSET_JOB", recorded.reconstruction_metadata[LINEAGE_KEY])
    assert {k.to_user_string() for k in assets.asset_layer.asset_graph.get_all_asset_keys()} >= {
        f"units/dev/app{i}" for i in range(3)}
