# Trust and permission policy documents of the pipeline's roles, with no provider: rendered and checked offline.

variable "oidc_provider_arn" {
  type = string
}

variable "oidc_host" {
  type    = string
  default = "token.actions.githubusercontent.com"
}

variable "github_repo" {
  type        = string
  description = "owner/name whose workflows may assume the roles"
}

variable "deploy_branch" {
  type    = string
  default = "main"
}

variable "audience" {
  type    = string
  default = "sts.amazonaws.com"
}

# The production profile (deploy/): run pods' projected service-account tokens, issued by the cluster's OIDC issuer.
# Pull-request and drift runs run as the plan service account; the deploy-branch sensor's apply runs as the apply one.
variable "kubernetes_oidc_provider_arn" {
  type    = string
  default = ""
}

variable "kubernetes_oidc_host" {
  type    = string
  default = ""
}

variable "plan_role_locks" {
  type        = bool
  default     = false
  description = "whether plans take the state lock (PIPELINES_PLAN_LOCK); by default they only read the state"
}

variable "plan_service_account" {
  type    = string
  default = "dagster:pipelines-plan"
}

variable "apply_service_account" {
  type    = string
  default = "dagster:pipelines-apply"
}

locals {
  kubernetes = var.kubernetes_oidc_provider_arn != ""
  # any ref of the repository (pull requests included) may plan
  plan_trust = {
    Version = "2012-10-17"
    Statement = concat([{
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = { "${var.oidc_host}:aud" = var.audience }
        StringLike   = { "${var.oidc_host}:sub" = "repo:${var.github_repo}:*" }
      }
      }], local.kubernetes ? [{
      Effect    = "Allow"
      Principal = { Federated = var.kubernetes_oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${var.kubernetes_oidc_host}:aud" = var.audience
          "${var.kubernetes_oidc_host}:sub" = [for sa in [var.plan_service_account, var.apply_service_account] : "system:serviceaccount:${sa}"]
        }
      }
    }] : [])
  }
  # only the deploy branch may apply: the token's sub claim names the ref (or the apply runs' service account)
  apply_trust = {
    Version = "2012-10-17"
    Statement = concat([{
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${var.oidc_host}:aud" = var.audience
          "${var.oidc_host}:sub" = "repo:${var.github_repo}:ref:refs/heads/${var.deploy_branch}"
        }
      }
      }], local.kubernetes ? [{
      Effect    = "Allow"
      Principal = { Federated = var.kubernetes_oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${var.kubernetes_oidc_host}:aud" = var.audience
          "${var.kubernetes_oidc_host}:sub" = "system:serviceaccount:${var.apply_service_account}"
        }
      }
    }] : [])
  }
  # the plan role reads state (plans run with -lock=false: a pull request cannot hold a lock that blocks applies);
  # everything else it may only read (ReadOnlyAccess is attached too)
  plan_state_access = {
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["s3:GetObject", "s3:ListBucket"], Resource = ["arn:aws:s3:::*tfstate*", "arn:aws:s3:::*tfstate*/*"] },
      { Effect = "Allow", Action = var.plan_role_locks ? ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"] : ["dynamodb:GetItem"], Resource = ["arn:aws:dynamodb:*:*:table/*lock*"] },
    ]
  }
}

output "plan_trust_policy" {
  value = jsonencode(local.plan_trust)
}

output "apply_trust_policy" {
  value = jsonencode(local.apply_trust)
}

output "plan_state_policy" {
  value = jsonencode(local.plan_state_access)
}
