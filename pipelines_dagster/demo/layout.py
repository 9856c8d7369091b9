"""The demo infrastructure-live: three accounts, the usual Terragrunt-style configuration files, and five plain
Terraform units with null resources in one dependency chain (a DNS zone, each environment's network after it,
each environment's app after its network).

Terragrunt is not installable here, so the units are plain Terraform root modules. They read the configuration
files above them with `file()`, as Terragrunt's includes would merge them, so a change to `_envcommon/app.hcl`
plans every app and a change to `root.hcl` plans everything. Their s3 backend is a production one; the demo
points it at the AWS emulator from the environment (TF_CLI_ARGS_init).
"""

from .aws import LOCK_TABLE, REGION, state_bucket

ACCOUNTS = {"shared": "111111111111", "dev": "222222222222", "prod": "333333333333"}
ENVIRONMENTS = {"shared": "mgmt", "dev": "dev", "prod": "prod"}  # one environment folder per account
UNITS = {  # unit -> component (its settings in _envcommon/<component>.hcl)
    "shared/us-east-1/mgmt/dns": "dns",
    "dev/us-east-1/dev/network": "network",
    "dev/us-east-1/dev/app": "app",
    "prod/us-east-1/prod/network": "network",
    "prod/us-east-1/prod/app": "app",
}
DEPENDENCIES = {  # plain Terraform units declare their order in .pipelines.yml
    "dev/us-east-1/dev/network": ["shared/us-east-1/mgmt/dns"],
    "dev/us-east-1/dev/app": ["dev/us-east-1/dev/network"],
    "prod/us-east-1/prod/network": ["shared/us-east-1/mgmt/dns"],
    "prod/us-east-1/prod/app": ["prod/us-east-1/prod/network"],
}
COMPONENTS = {
    "dns": {"zone": "demo.internal", "instances": "1"},
    "network": {"cidr": "10.0.0.0/16", "instances": "1"},
    "app": {"size": "small", "instances": "2"},
}

README = """# demo infrastructure-live

Made by `make run` of pipelines-dagster. Push a branch to `origin` for a plan; push `main` to apply.
"""

UNIT = '''# The {component} of the {env} environment in account {account}; null resources stand in for the real thing.
terraform {{
  backend "s3" {{
    bucket         = "{bucket}"
    key            = "{unit}/terraform.tfstate"
    region         = "{region}"
    dynamodb_table = "{lock_table}"
  }}
}}

locals {{
  # key = "value" pairs of the configuration above this unit, later files winning, as Terragrunt merges inputs
  settings = merge([for text in [
    file("${{path.module}}/../../../../root.hcl"),
    file("${{path.module}}/../../../account.hcl"),
    file("${{path.module}}/../../region.hcl"),
    file("${{path.module}}/../env.hcl"),
    file("${{path.module}}/../../../../_envcommon/{component}.hcl"),
  ] : {{ for pair in regexall("(\\\\w+)\\\\s*=\\\\s*\\"([^\\"]*)\\"", text) : pair[0] => pair[1] }}]...)
}}

resource "null_resource" "{component}" {{
  count    = tonumber(local.settings.instances)
  triggers = {{ for key, value in local.settings : key => value if key != "instances" }}
}}

output "settings" {{
  value = local.settings
}}
'''


def _locals(comment: str, values: dict[str, str]) -> str:
    width = max(len(k) for k in values)
    body = "".join(f'  {key:<{width}} = "{value}"\n' for key, value in values.items())
    return f"# {comment}\nlocals {{\n{body}}}\n"


def settings_files() -> dict[str, str]:
    """Accounts, .pipelines.yml and the configuration files: the repository before it has units."""
    files = {
        "README.md": README,
        "accounts.yml": "# The AWS accounts deployed to; each owns the top-level folder of its name.\n" + "".join(
            f'{name}:\n  id: "{account_id}"\n  email: {name}@example.com\n  deploy_order: {order}\n'
            for order, (name, account_id) in enumerate(ACCOUNTS.items(), start=1)),
        ".pipelines.yml": "deploy_branch: main\nignore: [\"**/*.md\"]\n"
                          "# plain Terraform units declare their order here (Terragrunt units use dependency blocks)\n"
                          "dependencies:\n" + "".join(f"  {unit}: [{', '.join(deps)}]\n"
                                                      for unit, deps in DEPENDENCIES.items()),
        "root.hcl": _locals("Settings of the whole repository (a Terragrunt root.hcl would configure remote state "
                            "too).", {"project": "demo", "owner": "platform-team"}),
    }
    for component, values in COMPONENTS.items():
        files[f"_envcommon/{component}.hcl"] = _locals(f"Settings of every environment's {component}.", values)
    for account, env in ENVIRONMENTS.items():
        files[f"{account}/account.hcl"] = _locals("Settings of the account.", {"account_name": account})
        files[f"{account}/{REGION}/region.hcl"] = _locals("Settings of the region.", {"aws_region": REGION})
        files[f"{account}/{REGION}/{env}/env.hcl"] = _locals("Settings of the environment.", {"env": env})
    return files


def unit_files() -> dict[str, str]:
    """The units' root modules."""
    files = {}
    for unit, component in UNITS.items():
        account, _, env, _ = unit.split("/")
        files[f"{unit}/main.tf"] = UNIT.format(component=component, account=account, env=env, unit=unit,
                                               bucket=state_bucket(ACCOUNTS[account]), region=REGION,
                                               lock_table=LOCK_TABLE)
    return files
