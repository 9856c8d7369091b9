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

locals {
  # any ref of the repository (pull requests included) may plan
  plan_trust = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = { "${var.oidc_host}:aud" = var.audience }
        StringLike   = { "${var.oidc_host}:sub" = "repo:${var.github_repo}:*" }
      }
    }]
  }
  # only the deploy branch may apply: the token's sub claim names the ref
  apply_trust = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${var.oidc_host}:aud" = var.audience
          "${var.oidc_host}:sub" = "repo:${var.github_repo}:ref:refs/heads/${var.deploy_branch}"
        }
      }
    }]
  }
  # the plan role reads state and locks it; everything else it may only read (ReadOnlyAccess is attached too)
  plan_state_access = {
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["s3:GetObject", "s3:ListBucket"], Resource = ["arn:aws:s3:::*tfstate*", "arn:aws:s3:::*tfstate*/*"] },
      { Effect = "Allow", Action = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"], Resource = ["arn:aws:dynamodb:*:*:table/*lock*"] },
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
