"""A fixture infrastructure-live repository laid out the way Terragrunt users lay theirs out, in real git."""

import subprocess
import textwrap
from pathlib import Path

ROOT_HCL = """
locals {
  account_vars = read_terragrunt_config(find_in_parent_folders("account.hcl"))
  region_vars  = read_terragrunt_config(find_in_parent_folders("region.hcl"))
  env_vars     = read_terragrunt_config(find_in_parent_folders("env.hcl"))
  account_name = local.account_vars.locals.account_name
  aws_region   = local.region_vars.locals.aws_region
}

remote_state {
  backend = "s3"
  config = {
    bucket = "tfstate-${local.account_name}-${local.aws_region}"
    key    = "${path_relative_to_include()}/terraform.tfstate"
    region = local.aws_region
  }
}

inputs = merge(local.account_vars.locals, local.region_vars.locals, local.env_vars.locals)
"""

ENVCOMMON = """
locals {
  env_vars        = read_terragrunt_config(find_in_parent_folders("env.hcl"))
  env             = local.env_vars.locals.env
  base_source_url = "${dirname(find_in_parent_folders("root.hcl"))}/modules//%(module)s"
}

terraform {
  source = local.base_source_url
}

inputs = {
  name = "%(module)s-${local.env}"
}
"""

UNIT = """
include "root" {
  path = find_in_parent_folders("root.hcl")
}

include "envcommon" {
  path   = "${dirname(find_in_parent_folders("root.hcl"))}/_envcommon/%(module)s.hcl"
  expose = true
}
%(extra)s
inputs = {
  size = "small"
}
"""

DEP = """
dependency "%(name)s" {
  config_path = "../%(name)s"
  mock_outputs = { id = "mock" }
}
"""

ACCOUNTS = """
dev:
  id: "111111111111"
  email: dev@example.com
  deploy_order: 1
prod:
  id: "222222222222"
  email: prod@example.com
  deploy_order: 2
"""


def unit(module: str, deps: list[str] = (), extra: str = "") -> str:
    return UNIT % {"module": module, "extra": "".join(DEP % {"name": d} for d in deps) + extra}


def layout() -> dict[str, str]:
    files = {
        "README.md": "# infrastructure-live\n",
        "accounts.yml": ACCOUNTS,
        "root.hcl": ROOT_HCL,
        "_envcommon/vpc.hcl": ENVCOMMON % {"module": "vpc"},
        "_envcommon/mysql.hcl": ENVCOMMON % {"module": "mysql"},
        "_envcommon/app.hcl": ENVCOMMON % {"module": "app"},
        "modules/vpc/main.tf": 'resource "null_resource" "vpc" {}\n',
        "modules/mysql/main.tf": 'module "sg" {\n  source = "../security-group"\n}\n',
        "modules/security-group/main.tf": 'resource "null_resource" "sg" {}\n',
        "modules/app/main.tf": ('resource "null_resource" "app" {\n'
                                '  triggers = { data = file("${path.module}/templates/user-data.sh") }\n}\n'),
        "modules/app/templates/user-data.sh": "#!/bin/sh\necho hello\n",
        "modules/iam-roles/main.tf": 'resource "null_resource" "roles" {}\n',
        "prod/global/iam/main.tf": ('terraform {\n  backend "s3" {}\n}\n\nmodule "roles" {\n'
                                    '  source = "../../../modules/iam-roles"\n}\n'),
        "prod/config/app.yaml": "replicas: 3\n",
    }
    for account in ("dev", "prod"):
        files[f"{account}/account.hcl"] = f'locals {{\n  account_name = "{account}"\n}}\n'
        files[f"{account}/us-east-1/region.hcl"] = 'locals {\n  aws_region = "us-east-1"\n}\n'
    envs = {"dev": ["dev", "stage"], "prod": ["prod"]}
    for account, names in envs.items():
        for env in names:
            base = f"{account}/us-east-1/{env}"
            files[f"{base}/env.hcl"] = f'locals {{\n  env = "{env}"\n}}\n'
            files[f"{base}/vpc/terragrunt.hcl"] = unit("vpc")
            files[f"{base}/mysql/terragrunt.hcl"] = unit("mysql", ["vpc"])
            if env != "stage":
                extra = ""
                if account == "prod":
                    extra = ('\nlocals {\n'
                             '  app_cfg = yamldecode(file("${get_terragrunt_dir()}/../../../config/app.yaml"))\n}\n')
                files[f"{base}/app/terragrunt.hcl"] = unit("app", ["vpc", "mysql"], extra)
    return files


class LiveRepo:
    """A work repository with helpers to change files and commit."""

    def __init__(self, path: Path):
        self.path = path

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True,
                              text=True).stdout.strip()

    def write(self, files: dict[str, str | None]) -> None:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                if target.exists():
                    target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(content).lstrip("\n") if content.startswith("\n") else content)

    def commit(self, files: dict[str, str | None] | None = None, message: str = "change") -> str:
        if files:
            self.write(files)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()


def make_live_repo(path: Path, files: dict[str, str] | None = None) -> LiveRepo:
    path.mkdir(parents=True, exist_ok=True)
    repo = LiveRepo(path)
    repo.git("init", "-q", "-b", "main")
    repo.git("config", "user.email", "test@example.com")
    repo.git("config", "user.name", "test")
    repo.commit(layout() if files is None else files, "initial layout")
    return repo
