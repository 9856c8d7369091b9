"""What a unit's processes may see and do: an allowlisted environment, confined processes, and, when the pipeline
runs as root, a uid of their own.

Code from the repository (providers, external data sources, hooks, local-exec) runs in unit processes and is
hostile. Those processes get only the variables Terraform needs (never a GitHub token, a Dagster or Postgres
setting, an OIDC token variable or any PIPELINES_* setting). `TF_*`, `TG_*` and `TERRAGRUNT_*` variables pass by
name only (PASSED_TF_ENV, and what PIPELINES_UNIT_ENV names): values (`TF_VAR_*`), arguments (`TF_CLI_ARGS*`), the
http backend's credentials (`TF_HTTP_*`) and folders shared between units (`TF_PLUGIN_CACHE_DIR`, `TF_DATA_DIR`)
stay out unless the deployment names them. Registry credentials (`TF_TOKEN_*`, `TG_TF_REGISTRY_TOKEN`, the
`credentials` blocks of the CLI configuration) are for `init` alone, which downloads modules and providers and
runs none of them (Terragrunt's evaluates the unit's configuration: the engine gives them to it for deploy-branch
commits only); later commands get a copy of the CLI configuration that keeps only CLI_CONFIG_KEPT settings. Both
copies are the unit user's alone (0600) in the run folder, and init's is deleted when init ends.

Every unit process starts with PR_SET_NO_NEW_PRIVS (a setuid file cannot raise its privileges) and with limits
on address space, file size, CPU time and, when it runs as a user of its own, the number of that user's
processes (`Confinement`).

When the pipeline is root, units run as an unprivileged user (PIPELINES_UNIT_USER, default a uid of their own from
a range; never uid 0, nor the group root), which can read neither the pipeline's token files nor its processes'
environments (/proc/<pid>/environ of another user's process is refused). That user owns the unit's part of the
run folder; the engine binary, the plugin folder and CA bundles are used in place when it can reach them, else
from read-only copies (root's, cached by content) in a folder it can reach.

A uid of a range is leased to one unit at a time, and only when it is clean: no process runs as it, no run folder
left in the unit space is its, and it owns nothing in the folders every user may write (SHARED_FOLDERS): a unit's
uid can create files only where it may write, which is its own run folder (removed with the run) and those
folders, searched below them wherever a unit could have written (folders of a unit's uid, folders anyone may
write, to a depth of MAX_DEPTH). Files a uid left there (a setuid copy of a shell, say) are removed before it is
leased again, or it is not leased. When a unit ends, every process of its uid is killed.
"""
