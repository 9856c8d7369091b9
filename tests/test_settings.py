"""The settings object: every variable documented in the README's one table, read once, bad values named."""

import re
from pathlib import Path

import pytest

from pipelines_dagster.settings import Settings, SettingsError, variables

ROOT = Path(__file__).resolve().parents[1]


def documented() -> set[str]:
    table = ROOT.joinpath("README.md").read_text().split("| variable | default | meaning |", 1)[1].split("\n\n")[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


def test_every_setting_is_in_the_readme_table():
    assert set(variables()) - documented() == set()


def test_nothing_outside_the_settings_module_reads_a_setting():
    names = set(variables()) - {"GITHUB_API_URL"}  # GitHubClient.from_env keeps its documented fallback
    readers = []
    for path in (ROOT / "pipelines_dagster").rglob("*.py"):
        if path.name == "settings.py" or "demo" in path.parts:
            continue
        text = path.read_text()
        readers += [f"{path.relative_to(ROOT)}: {n}" for n in names
                    if re.search(rf"\.get\(\s*[\"']{n}[\"']|\[\s*[\"']{n}[\"']\s*\](?!\s*=[^=])", text)]
    assert readers == []


def test_values_are_validated_and_empty_ones_are_unset():
    s = Settings.from_env({"PIPELINES_MAX_PARALLEL": "6", "PIPELINES_DRIFT_PATHS": "dev/*, prod/app",
                           "PIPELINES_SENSORS_DEFAULT_STATUS": "stopped", "PIPELINES_DEPLOY_BRANCH": "",
                           "AWS_DEFAULT_REGION": "eu-west-1"})
    assert (s.max_parallel, s.drift_paths, s.sensors_running, s.deploy_branch, s.aws_region) == (
        6, ["dev/*", "prod/app"], False, None, "eu-west-1")
    with pytest.raises(SettingsError, match=r"PIPELINES_MAX_PARALLEL='many'.*PIPELINES_PLAN_LOCK='perhaps'"):
        Settings.from_env({"PIPELINES_MAX_PARALLEL": "many", "PIPELINES_PLAN_LOCK": "perhaps"})


def test_a_setting_keeps_reading_its_former_name():
    assert Settings.from_env({"PIPELINES_LOCK_RETRIES": "5"}).transient_retries == 5
    assert Settings.from_env({"PIPELINES_TRANSIENT_RETRIES": "3", "PIPELINES_LOCK_RETRIES": "5"}).transient_retries == 3
