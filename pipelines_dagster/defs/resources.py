"""Resources, configured from the environment variables of DESIGN.md."""

import os
from pathlib import Path

import dagster as dg

from ..core.engine import EngineSettings


class InfraRepoResource(dg.ConfigurableResource):
    """infrastructure-live: a local path or a git URL (mirrored under the cache and fetched on use)."""

    location: str
    deploy_branch: str | None = None

    def git_dir(self, fetch: bool = True) -> Path:
        from ..integrations.git import open_git_dir

        return open_git_dir(self.location, fetch=fetch)


class GitHubResource(dg.ConfigurableResource):
    """GitHub (token or App from the environment); `repo` unset means local mode: no GitHub calls at all."""

    repo: str | None = None
    # a run makes at most 6 writes and each step has its own client, so PyGithub's default 1 s pause between
    # writes would only slow the run; GitHub's secondary rate limits are honoured by the retries instead
    seconds_between_writes: float = 0.1

    @property
    def local_mode(self) -> bool:
        return not self.repo

    def client(self):
        if self.local_mode:
            return None
        from ..integrations.github import GitHubClient

        return GitHubClient.from_env(self.repo, seconds_between_writes=self.seconds_between_writes,
                                     seconds_between_requests=0)

    def push_token(self, location: str) -> str | None:
        """The GitHub token (PIPELINES_GITHUB_TOKEN_FILE, else GITHUB_TOKEN) git authenticates with to push
        branches to an https remote; None keeps git's own credentials."""
        from ..integrations.github import token_from_env

        if self.local_mode or not location.startswith("https://"):
            return None
        return token_from_env()


class EngineResource(dg.ConfigurableResource):
    """How units run: parallelism inside one step, offline provider folder, timeout, Dagster UI link base."""

    max_parallel: int = 4
    plugin_dir: str | None = None
    timeout_s: float | None = None
    ui_url: str | None = None

    def settings(self) -> EngineSettings:
        overrides = {"plugin_dir": self.plugin_dir} if self.plugin_dir else {}
        if self.timeout_s:
            overrides["timeout_s"] = self.timeout_s
        return EngineSettings.from_env(**overrides)

    def run_url(self, run_id: str) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if self.ui_url else None


def apply_lock(github: GitHubResource, infra_repo: InfraRepoResource) -> str:
    """The value of the apply-lock run tag: one per repository, so its applies (and drift runs) never overlap."""
    from ..core.watch import repo_identity

    return repo_identity(github.repo or infra_repo.location)


def resources_from_env(env=None) -> dict:
    env = os.environ if env is None else env
    return {
        "infra_repo": InfraRepoResource(location=env.get("PIPELINES_REPO_URL", "."),
                                        deploy_branch=env.get("PIPELINES_DEPLOY_BRANCH") or None),
        "github": GitHubResource(repo=env.get("PIPELINES_GITHUB_REPO") or None),
        "engine": EngineResource(max_parallel=int(env.get("PIPELINES_MAX_PARALLEL", "4")),
                                 plugin_dir=env.get("PIPELINES_TF_PLUGIN_DIR") or None,
                                 ui_url=env.get("PIPELINES_UI_URL") or None),
    }
