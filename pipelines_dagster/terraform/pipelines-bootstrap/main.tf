# The pipeline's identity in one AWS account: the OIDC identity provider and the two roles it assumes.
# Plan role: read-only, trusted for any ref of the repository. Apply role: administrator, trusted only for the
# deploy branch (the token's `sub` claim). Policy documents live in ./policies (tested offline).

variable "github_repo" {
  type = string
}

variable "deploy_branch" {
  type    = string
  default = "main"
}

variable "oidc_url" {
  type    = string
  default = "https://token.actions.githubusercontent.com"
}

variable "oidc_thumbprints" {
  type    = list(string)
  default = ["6938fd4d98bab03faadb97b34396831e3780aea1"]
}

# The production profile's cluster (deploy/): its OIDC issuer URL (EKS: the cluster's "OpenID Connect provider URL")
# makes the roles trust run pods' service-account tokens too: the plan role both service accounts, the apply role
# only the apply runs' one.
variable "kubernetes_oidc_url" {
  type    = string
  default = ""
}

variable "kubernetes_oidc_thumbprints" {
  type    = list(string)
  default = []
}

variable "plan_service_account" {
  type    = string
  default = "dagster:pipelines-plan"
}

variable "apply_service_account" {
  type    = string
  default = "dagster:pipelines-apply"
}

variable "plan_role_locks" {
  type        = bool
  default     = false
  description = "set when the pipeline runs with PIPELINES_PLAN_LOCK: plans then take the state lock"
}

variable "plan_role_name" {
  type    = string
  default = "pipelines-plan"
}

variable "apply_role_name" {
  type    = string
  default = "pipelines-apply"
}

resource "aws_iam_openid_connect_provider" "pipelines" {
  url             = var.oidc_url
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = var.oidc_thumbprints
}

resource "aws_iam_openid_connect_provider" "kubernetes" {
  count           = var.kubernetes_oidc_url == "" ? 0 : 1
  url             = var.kubernetes_oidc_url
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = var.kubernetes_oidc_thumbprints
}

module "policies" {
  source                       = "./policies"
  oidc_provider_arn            = aws_iam_openid_connect_provider.pipelines.arn
  oidc_host                    = replace(var.oidc_url, "https://", "")
  github_repo                  = var.github_repo
  deploy_branch                = var.deploy_branch
  kubernetes_oidc_provider_arn = var.kubernetes_oidc_url == "" ? "" : aws_iam_openid_connect_provider.kubernetes[0].arn
  kubernetes_oidc_host         = replace(var.kubernetes_oidc_url, "https://", "")
  plan_service_account         = var.plan_service_account
  apply_service_account        = var.apply_service_account
  plan_role_locks              = var.plan_role_locks
}

resource "aws_iam_role" "plan" {
  name               = var.plan_role_name
  assume_role_policy = module.policies.plan_trust_policy
}

resource "aws_iam_role_policy_attachment" "plan_read_only" {
  role       = aws_iam_role.plan.name
  policy_arn = "arn:aws:iam::aws:policy/ReadOnlyAccess"
}

resource "aws_iam_role_policy" "plan_state" {
  name   = "terraform-state"
  role   = aws_iam_role.plan.id
  policy = module.policies.plan_state_policy
}

resource "aws_iam_role" "apply" {
  name               = var.apply_role_name
  assume_role_policy = module.policies.apply_trust_policy
}

resource "aws_iam_role_policy_attachment" "apply_admin" {
  role       = aws_iam_role.apply.name
  policy_arn = "arn:aws:iam::aws:policy/AdministratorAccess"
}

output "plan_role_arn" {
  value = aws_iam_role.plan.arn
}

output "apply_role_arn" {
  value = aws_iam_role.apply.arn
}
