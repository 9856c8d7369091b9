"""The deployment's Terraform secrets stay out of pull requests' code: `TF_VAR_*`, `TF_HTTP_*` and the like pass
only when named, and registry credentials (`TF_TOKEN_*`, the CLI configuration's `credentials` blocks) reach
`init` alone, through a copy of the CLI configuration that only the unit's uid can read and that does not outlive
the run."""

import base64
import dataclasses
import hashlib
import os
import uuid
from pathlib import Path

import pytest

from pipelines_dagster.core.isolation.cli_config import cli_config_without_credentials
from pipelines_dagster.core.model import Status
from pipelines_dagster.demo.terraform import install_null_provider
from tests.conftest import env_file, null_unit, s3_backend
from tests.core.test_engine import request
from tests.core.test_isolation import EVIL

REGISTRY_TOKEN = "registry-token-" + uuid.uuid4().hex
HELPER_TOKEN = "registry-token-of-terragrunt-" + uuid.uuid4().hex
CONFIG_TOKEN = "config-token-" + uuid.uuid4().hex
VAR_SECRET = "tf-var-secret-" + uuid.uuid4().hex
HTTP_PASSWORD = "http-backend-password-" + uuid.uuid4().hex


@pytest.fixture
def terraform_secrets(monkeypatch):
    """Terraform secrets in the pipeline's environment, as a deployment sets them for its own use."""
    monkeypatch.setenv("TF_TOKEN_example_com", REGISTRY_TOKEN)
    monkeypatch.setenv("TG_TF_REGISTRY_TOKEN", HELPER_TOKEN)
    monkeypatch.setenv("TF_VAR_db_password", VAR_SECRET)
    monkeypatch.setenv("TF_HTTP_PASSWORD", HTTP_PASSWORD)
    return [REGISTRY_TOKEN, HELPER_TOKEN, CONFIG_TOKEN, VAR_SECRET, HTTP_PASSWORD]


def root_only_config(folder: Path, body: str = "") -> Path:
    """A CLI configuration with registry credentials, readable by root alone (as a deployment keeps it)."""
    config = folder / "terraformrc"
    config.write_text(f'''disable_checkpoint = true
credentials "example.com" {{
  token = "{CONFIG_TOKEN}"
}}
credentials_helper "example" {{
  args = ["--token", "{CONFIG_TOKEN}"]
}}
{body}''')
    config.chmod(0o600)
    return config


def unit_uid(uid: str) -> bool:
    return 200000 <= int(uid) <= 299999 if os.geteuid() == 0 else int(uid) == os.geteuid()


def leftovers(space: Path, secret: str) -> list[Path]:
    return [p for p in space.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]


def test_a_committed_provider_finds_no_terraform_secret_of_the_pipeline_and_init_ran_no_provider(
        repo, aws, make_executor, settings, drop_box, terraform_secrets):
    loot = drop_box / "loot"
    config = root_only_config(drop_box)
    # it reads its environment, the CLI configuration it is given, and init's copy next to it
    script = f'''#!/bin/sh
config_dir=$(dirname "$TF_CLI_CONFIG_FILE")
{{
  echo "command $(tr '\\0' ' ' < /proc/$PPID/cmdline | base64 -w0)"
  echo "uid $(id -u)"
  echo "environ $(base64 -w0 < /proc/$$/environ)"
  echo "config $(base64 -w0 < "$TF_CLI_CONFIG_FILE")"
  echo "mode $(stat -c '%a-%u' "$TF_CLI_CONFIG_FILE")"
  echo "init-copy $(cat "$config_dir/init.tfrc" 2>&1 | base64 -w0)"
}} >> {loot}
exit 1
'''
    unit = f"dev/evil-{uuid.uuid4().hex[:6]}"
    folder = repo.path / unit
    (folder / EVIL).parent.mkdir(parents=True, exist_ok=True)
    (folder / EVIL).write_text(script)
    (folder / EVIL).chmod(0o755)
    head = repo.commit({f"{unit}/main.tf": s3_backend(aws.endpoint, "dev", f"{unit}/terraform.tfstate") + '''
terraform {
  required_providers {
    evil = { source = "hashicorp/evil" }
  }
}

provider "evil" {}
'''}, "a unit with a committed provider")
    # Terraform's implied local mirror installs the committed provider (no plugin folder, no provider_installation)
    executor = make_executor(settings=dataclasses.replace(settings, tf_plugin_dir=None, work_dir=str(drop_box),
                                                          env={"TF_CLI_CONFIG_FILE": str(config)}))

    result = executor.execute(request(unit, "plan", head))

    assert result.status is Status.FAILED and "Installed hashicorp/evil v1.0.0" in result.output, result.output
    assert loot.exists(), "the committed provider never ran: this test would prove nothing"
    found = {}
    for line in loot.read_text().splitlines():
        what, _, value = line.partition(" ")
        found.setdefault(what, []).append(value if what in ("uid", "mode") else base64.b64decode(value).decode())
    assert all(" plan " in command for command in found["command"]), found["command"]  # never under init
    assert unit_uid(found["uid"][0])
    assert "TF_IN_AUTOMATION=1" in found["environ"][0]  # it did read its environment
    seen = "\n".join(found["environ"] + found["config"] + found["init-copy"])
    for secret in terraform_secrets:
        assert secret not in seen
    assert "TF_TOKEN_" not in seen and "TF_VAR_" not in seen and "TF_HTTP_" not in seen
    assert found["config"][0] == "disable_checkpoint = true\n"
    assert found["mode"][0] == f"600-{found['uid'][0]}"
    assert "No such file or directory" in found["init-copy"][0]
    # nothing of it stays: no run folder, no staged copy of the configuration
    space = drop_box / "pipelines-units"
    assert list(space.glob("pipelines-run-*")) == [] and leftovers(space, CONFIG_TOKEN) == []


def fake_engine(drop_box: Path) -> Path:
    """An engine that records, for each command, its environment, CLI configuration and init's copy of it."""
    script = drop_box / "engine"
    script.write_text(f'''#!/bin/sh
config_dir=$(dirname "$TF_CLI_CONFIG_FILE")
{{
  env
  echo "CONFIG=$(base64 -w0 < "$TF_CLI_CONFIG_FILE")"
  echo "CONFIG_MODE=$(stat -c '%a-%u' "$TF_CLI_CONFIG_FILE")"
  echo "INIT_COPY=$(cat "$config_dir"/init.tfrc 2>/dev/null | base64 -w0)"
}} > {drop_box}/$1.env
if [ "$1" = show ]; then echo '{{"format_version": "0.2", "resource_changes": []}}'; fi
''')
    script.chmod(0o755)
    return script


def recorded(drop_box: Path, command: str) -> dict:
    """What the fake engine recorded for `command` (read once: the next unit's uid may not overwrite it)."""
    env = env_file(drop_box / f"{command}.env")
    (drop_box / f"{command}.env").unlink()
    env["CONFIG"] = base64.b64decode(env["CONFIG"]).decode()
    env["INIT_COPY"] = base64.b64decode(env["INIT_COPY"]).decode()
    return env


def test_init_alone_gets_the_registry_credentials_and_terragrunts_only_on_the_deploy_branch(
        repo, aws, make_executor, settings, drop_box, terraform_secrets):
    engine = fake_engine(drop_box)
    config = root_only_config(drop_box, 'provider_installation {\n  direct {}\n}\n')
    tf_unit, tg_unit = f"dev/tf-{uuid.uuid4().hex[:6]}", f"dev/tg-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{tf_unit}/main.tf": null_unit(aws.endpoint, tf_unit, count=1),
                        f"{tg_unit}/terragrunt.hcl": "terraform {}\n"})
    executor = make_executor(settings=dataclasses.replace(
        settings, binaries={"terraform": str(engine), "terragrunt": str(engine)}, work_dir=str(drop_box),
        env={"TF_CLI_CONFIG_FILE": str(config)}))

    plan = executor.execute(request(tf_unit, "plan", head))  # a pull request's plan
    assert plan.status is Status.NO_CHANGES, plan.message + plan.output
    init, later = recorded(drop_box, "init"), [recorded(drop_box, c) for c in ("plan", "show")]
    assert init["TF_TOKEN_example_com"] == REGISTRY_TOKEN and init["TG_TF_REGISTRY_TOKEN"] == HELPER_TOKEN
    assert init["CONFIG"] == config.read_text()  # with its credentials
    assert unit_uid(init["CONFIG_MODE"].split("-")[1]) and init["CONFIG_MODE"].startswith("600-")
    for env in later:
        assert not [k for k in env if k.startswith(("TF_TOKEN_", "TG_TF_REGISTRY", "TF_VAR_", "TF_HTTP_"))]
        assert env["CONFIG"] == cli_config_without_credentials(config.read_text())
        assert env["CONFIG"] == "disable_checkpoint = true\nprovider_installation {\n  direct {}\n}\n"
        assert env["INIT_COPY"] == "" and env["CONFIG_MODE"] == init["CONFIG_MODE"]
    assert REGISTRY_TOKEN not in plan.output

    # Terragrunt's init evaluates the unit's configuration (run_cmd, hooks): credentials for deploy-branch commits only
    tg_plan = executor.execute(request(tg_unit, "plan", head))
    assert tg_plan.status is Status.NO_CHANGES, tg_plan.message + tg_plan.output
    init = recorded(drop_box, "init")
    for command in ("plan", "show"):
        recorded(drop_box, command)
    assert "TF_TOKEN_example_com" not in init and CONFIG_TOKEN not in init["CONFIG"]
    tg_apply = executor.execute(request(tg_unit, "apply", head))
    assert tg_apply.status is Status.NO_CHANGES, tg_apply.message + tg_apply.output
    init, plan_env = recorded(drop_box, "init"), recorded(drop_box, "plan")
    assert init["TF_TOKEN_example_com"] == REGISTRY_TOKEN and CONFIG_TOKEN in init["CONFIG"]
    assert "TF_TOKEN_example_com" not in plan_env and CONFIG_TOKEN not in plan_env["CONFIG"]


def test_a_cli_configuration_with_credentials_and_a_filesystem_mirror_installs_providers_and_does_not_stay(
        repo, aws, make_executor, settings, drop_box):
    mirror = install_null_provider(drop_box / "mirror")  # where the unit user can read it
    config = root_only_config(drop_box, f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n'
                                        '  }\n}\n')
    seen = drop_box / "seen"
    extra = f'''resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = "stat -c '%a-%u' $TF_CLI_CONFIG_FILE > {seen}; cat $TF_CLI_CONFIG_FILE >> {seen}"
  }}
}}
'''
    unit = f"dev/mirror-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1, extra=extra)})
    executor = make_executor(settings=dataclasses.replace(settings, tf_plugin_dir=None, work_dir=str(drop_box),
                                                          env={"TF_CLI_CONFIG_FILE": str(config)}))

    result = executor.execute(request(unit, "apply", head))

    assert result.status is Status.SUCCEEDED, result.message + result.output
    assert "Installed hashicorp/null v2.1.2" in result.output and "-plugin-dir" not in result.output
    mode, _, text = seen.read_text().partition("\n")
    assert mode.startswith("600-") and unit_uid(mode.split("-")[1])
    assert f'path = "{mirror}"' in text and "credentials" not in text and CONFIG_TOKEN not in text
    space = drop_box / "pipelines-units"
    assert list(space.glob("pipelines-run-*")) == [] and leftovers(space, CONFIG_TOKEN) == []


def test_the_cli_configuration_of_later_commands_keeps_known_settings_only_and_refuses_what_it_cannot_read():
    text = '''# credentials "commented" { token = "leak-0" }
plugin_cache_dir = "/var/cache/terraform"
Credentials "b.example.com" { token = "leak-1" }
"credentials" "c.example.com" {
  token = "leak-}-2"
}
credentials_helper "example" {
  args = ["${foo("}")}", "leak-3"]
}
credentials = { "d.example.com" = { token = <<EOT
leak-4 }
EOT
} }
/* oci_credentials "x" { password = "leak-5" } */
provider_installation {
  filesystem_mirror {
    path    = "/usr/share/terraform/providers" # a mirror
    include = ["example.com/*/*"]
  }
  direct {
    exclude = ["example.com/*/*"]
  }
}
host "example.com" {
  services = { "modules.v1" = "https://modules.example.com/v1/" }
}
'''
    kept = cli_config_without_credentials(text)
    assert "leak" not in kept and "plugin_cache_dir" not in kept
    assert kept == text[text.index("provider_installation"):]
    assert cli_config_without_credentials('{"credentials": {"a": {"token": "leak"}}, "disable_checkpoint": true}'
                                          ) == '{\n  "disable_checkpoint": true\n}\n'
    for broken in ('credentials "x" {', 'host = "unterminated', "}", "a b", "[1, 2]"):
        with pytest.raises(ValueError):
            cli_config_without_credentials(broken)


def test_a_provider_committed_in_the_units_terraform_folder_never_runs(repo, aws, make_executor, drop_box):
    """A `.terraform/providers/...` committed with the unit, and a lock file naming its hash: Terraform would use
    it as already installed, despite -plugin-dir, and run it during the plan with the plan role's credentials."""
    name = "terraform-provider-null_v2.1.2_x4"
    script = f"#!/bin/sh\necho \"uid=$(id -u) key=${{AWS_ACCESS_KEY_ID:-none}}\" > {drop_box}/ran-$$\nexit 1\n"
    line = hashlib.sha256(script.encode()).hexdigest() + "  " + name + "\n"
    h1 = "h1:" + base64.b64encode(hashlib.sha256(line.encode()).digest()).decode()
    unit = f"dev/plugged-{uuid.uuid4().hex[:6]}"
    tf = null_unit(aws.endpoint, unit).replace("terraform {\n", 'terraform {\n  required_providers {\n    null = { '
                                               'source = "hashicorp/null", version = "2.1.2" }\n  }\n', 1)
    provider = repo.path / unit / ".terraform/providers/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64" / name
    provider.parent.mkdir(parents=True)
    provider.write_text(script)
    provider.chmod(0o755)
    head = repo.commit({f"{unit}/main.tf": tf, f"{unit}/.terraform.lock.hcl": (
        'provider "registry.terraform.io/hashicorp/null" {\n  version     = "2.1.2"\n  constraints = "2.1.2"\n'
        f'  hashes = [\n    "{h1}",\n  ]\n}}\n')})

    result = make_executor().execute(request(unit, "plan", head))

    assert list(drop_box.iterdir()) == [], [p.read_text() for p in drop_box.iterdir()]
    assert result.status is Status.FAILED and "checksum" in result.message.lower()  # the lock file's hash is not ours
