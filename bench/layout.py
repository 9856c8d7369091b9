"""The scale layout the benchmarks generate: accounts x 2 regions x 3 environments x 5 instances x 4 components
(`vpc`; `database` and `cache` on the vpc; `app` on both), Terragrunt units including root.hcl and an _envcommon
file per component, as many accounts as the number of units asks for, committed on `main`."""

import subprocess
from pathlib import Path

from tests.livefixture import ENVCOMMON, ROOT_HCL, unit

COMPONENTS = {"vpc": [], "database": ["vpc"], "cache": ["vpc"], "app": ["database", "cache"]}
REGIONS = ("us-east-1", "eu-west-1")
ENVIRONMENTS = ("dev", "stage", "prod")
INSTANCES = 5
PER_ACCOUNT = len(REGIONS) * len(ENVIRONMENTS) * INSTANCES * len(COMPONENTS)


def generate(path: Path, units: int) -> list[str]:
    """Writes and commits `units` units under `path` (a new git repository); returns their folders."""
    accounts = -(-units // PER_ACCOUNT)
    files = {"root.hcl": ROOT_HCL, "accounts.yml": "".join(
        f'acct{a:03d}:\n  id: "{100000000000 + a}"\n  email: a{a}@example.com\n' for a in range(accounts))}
    for component in COMPONENTS:
        files[f"_envcommon/{component}.hcl"] = ENVCOMMON % {"module": component}
        files[f"modules/{component}/main.tf"] = f'resource "null_resource" "{component}" {{}}\n'
    folders: list[str] = []
    for a in range(accounts):
        account = f"acct{a:03d}"
        files[f"{account}/account.hcl"] = f'locals {{\n  account_name = "{account}"\n}}\n'
        for region in REGIONS:
            files[f"{account}/{region}/region.hcl"] = f'locals {{\n  aws_region = "{region}"\n}}\n'
            for env in ENVIRONMENTS:
                files[f"{account}/{region}/{env}/env.hcl"] = f'locals {{\n  env = "{env}"\n}}\n'
                for i in range(INSTANCES):
                    for component, deps in COMPONENTS.items():
                        if len(folders) < units:
                            folders.append(f"{account}/{region}/{env}/svc{i}/{component}")
                            files[f"{folders[-1]}/terragrunt.hcl"] = unit(component, deps)
    for rel, content in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.email=bench@example.com", "-c", "user.name=bench", "commit", "-q", "-m", "layout"]):
        subprocess.run(["git", *cmd], cwd=path, check=True)
    return folders
