"""What a unit's processes may see of the pipeline's environment: an allowlist, registry credentials for `init`
alone, and never the pipeline's secrets."""

import os
from collections.abc import Iterable, Mapping

# Passed from our environment to units (besides the deployment's EngineSettings.env and the unit's credentials).
PASSED_ENV = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_EC2_METADATA_DISABLED",
})
PASSED_PREFIXES = ("LC_", "AWS_ENDPOINT_URL")
CLI_CONFIG_VAR = "TF_CLI_CONFIG_FILE"  # passed as copies in the run folder (RunFolder.cli_configs)
# Terraform and Terragrunt variables passed by name: switches that hold no secret and point at no shared folder.
PASSED_TF_ENV = frozenset({
    "TF_LOG", "TF_LOG_CORE", "TF_LOG_PROVIDER", "TF_IN_AUTOMATION", "TF_INPUT", "TF_REGISTRY_DISCOVERY_RETRY",
    "TF_REGISTRY_CLIENT_TIMEOUT", "TG_LOG_LEVEL", "TERRAGRUNT_LOG_LEVEL", "TG_LOG_FORMAT", "TERRAGRUNT_LOG_FORMAT",
    CLI_CONFIG_VAR,
})
# Passed only when the unit has no credentials of its own (it then runs with the ambient ones).
AMBIENT_AWS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
)
# Never given to a unit, whoever asks (PIPELINES_UNIT_ENV, EngineSettings.env): the pipeline's own secrets.
NEVER_PASSED = frozenset({
    "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_RUNTIME_TOKEN",
})
NEVER_PASSED_PREFIXES = ("PIPELINES_", "DAGSTER_")
# Registry credentials: given to `init` alone (registry_credentials), never by name or by the deployment's env.
REGISTRY_CREDENTIALS = frozenset({"TG_TF_REGISTRY_TOKEN"})
REGISTRY_CREDENTIAL_PREFIXES = ("TF_TOKEN_",)
# Files named by these variables must be readable by the unit user: staged when they are not.
STAGED_FILE_VARS = ("SSL_CERT_FILE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")



def registry_credential(name: str) -> bool:
    return name in REGISTRY_CREDENTIALS or name.startswith(REGISTRY_CREDENTIAL_PREFIXES)


def never_passed(name: str) -> bool:
    return name in NEVER_PASSED or name.startswith(NEVER_PASSED_PREFIXES) or registry_credential(name)


def passed(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a variable of our environment reaches units: the allowlist, plus extra names (`NAME` or `PREFIX*`)."""
    if never_passed(name):
        return False
    if name in PASSED_ENV or name in PASSED_TF_ENV or name.startswith(PASSED_PREFIXES):
        return True
    return any(name == e or (e.endswith("*") and name.startswith(e[:-1])) for e in extra if e)


def unit_environment(base: Mapping[str, str], *, extra_names: Iterable[str] = (), settings_env: Mapping[str, str],
                     credentials_env: Mapping[str, str] | None, fixed: Mapping[str, str]) -> dict[str, str]:
    """Allowlisted variables of `base`, the deployment's `settings_env`, the unit's credentials (None: the ambient
    AWS variables instead), then `fixed` (HOME, TMPDIR, non-interactive switches). Secrets never pass."""
    extra_names = list(extra_names)
    env = {k: v for k, v in base.items() if passed(k, extra_names)}
    if credentials_env is None:
        env.update({k: base[k] for k in AMBIENT_AWS_ENV if k in base})
    env.update({k: v for k, v in settings_env.items() if not never_passed(k)})
    if credentials_env:
        env.update(credentials_env)
    env.update(fixed)
    env.setdefault("PATH", os.defpath)
    return env


def registry_credentials(base: Mapping[str, str], settings_env: Mapping[str, str]) -> dict[str, str]:
    """The registry credentials of `base` and the deployment's `settings_env`, for `init` only."""
    return {k: v for k, v in {**base, **settings_env}.items() if registry_credential(k)}


