"""The bootstrap module's trust and permission policies, rendered by real Terraform, offline (no provider)."""

import json
import subprocess
from pathlib import Path

from tests.conftest import terraform_binary

MODULE = Path(__file__).resolve().parents[2] / "pipelines_dagster" / "terraform" / "pipelines-bootstrap"


EKS_HOST = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


def render(tmp_path, tf_cli_config, extra: str = "") -> dict:
    (tmp_path / "main.tf").write_text(f'''
module "policies" {{
  source            = "{MODULE / 'policies'}"
  oidc_provider_arn = "arn:aws:iam::111111111111:oidc-provider/token.actions.githubusercontent.com"
  github_repo       = "acme/infrastructure-live"
  deploy_branch     = "main"
  {extra}
}}
output "plan" {{ value = module.policies.plan_trust_policy }}
output "apply" {{ value = module.policies.apply_trust_policy }}
output "state" {{ value = module.policies.plan_state_policy }}
''')
    env = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(tf_cli_config), "TF_IN_AUTOMATION": "1",
           "HOME": str(tmp_path)}
    tf = terraform_binary()
    for args in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
        proc = subprocess.run([tf, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + proc.stdout
    out = subprocess.run([tf, "output", "-json"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    return {k: json.loads(v["value"]) for k, v in json.loads(out.stdout).items()}


def test_plan_role_any_ref_apply_role_only_the_deploy_branch(tmp_path, tf_cli_config):
    policies = render(tmp_path, tf_cli_config)
    [plan], [apply] = policies["plan"]["Statement"], policies["apply"]["Statement"]
    for statement in (plan, apply):
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity" and statement["Effect"] == "Allow"
        assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
        assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert plan["Condition"]["StringLike"] == {
        "token.actions.githubusercontent.com:sub": "repo:acme/infrastructure-live:*"}
    assert apply["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == \
        "repo:acme/infrastructure-live:ref:refs/heads/main"
    assert "StringLike" not in apply["Condition"]  # no wildcard can widen the apply role's trust
    # plans read the state without its lock: a pull request's role cannot write a lock that would block applies
    actions = {a for s in policies["state"]["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket", "dynamodb:GetItem"}
    (tmp_path / "locking").mkdir()
    locking = render(tmp_path / "locking", tf_cli_config, "plan_role_locks = true")
    actions = {a for s in locking["state"]["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}


def test_run_pods_plan_as_either_service_account_and_apply_only_as_the_apply_one(tmp_path, tf_cli_config):
    policies = render(tmp_path, tf_cli_config, f'''
  kubernetes_oidc_provider_arn = "arn:aws:iam::111111111111:oidc-provider/{EKS_HOST}"
  kubernetes_oidc_host         = "{EKS_HOST}"''')
    [_, plan], [_, apply] = policies["plan"]["Statement"], policies["apply"]["Statement"]
    for statement in (plan, apply):
        assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{EKS_HOST}")
        assert statement["Condition"]["StringEquals"][f"{EKS_HOST}:aud"] == "sts.amazonaws.com"
        assert set(statement["Condition"]) == {"StringEquals"}  # no wildcard
    assert plan["Condition"]["StringEquals"][f"{EKS_HOST}:sub"] == [
        "system:serviceaccount:dagster:pipelines-plan", "system:serviceaccount:dagster:pipelines-apply"]
    assert apply["Condition"]["StringEquals"][f"{EKS_HOST}:sub"] == "system:serviceaccount:dagster:pipelines-apply"


def test_without_a_cluster_only_github_tokens_are_trusted(tmp_path, tf_cli_config):
    policies = render(tmp_path, tf_cli_config)
    principals = {s["Principal"]["Federated"] for p in ("plan", "apply") for s in policies[p]["Statement"]}
    assert principals == {"arn:aws:iam::111111111111:oidc-provider/token.actions.githubusercontent.com"}


def test_main_module_uses_the_rendered_policies():
    text = (MODULE / "main.tf").read_text()
    assert "assume_role_policy = module.policies.plan_trust_policy" in text
    assert "assume_role_policy = module.policies.apply_trust_policy" in text
    assert 'policy_arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"' in text
    assert "kubernetes_oidc_provider_arn = var.kubernetes_oidc_url" in text
