"""How the code location loads. The code server reads the deploy branch once (from the local mirror: no network,
no long wait) and records its lineage as Dagster's reconstruction metadata, as Dagster's own state-backed
integrations do. Run workers and step processes reconstruct from that record instead of reading git again, and
build only what they run: a plan or apply run gets its job and resources without the unit assets, so that each of
its steps costs the same whatever the number of units; Materialize and drift runs get everything.
"""

import json
import warnings
from collections.abc import Callable
from functools import cache, partial

import dagster as dg
from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
    StateBackedDefinitionsLoader,
)
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME, RepositoryData
from dagster._serdes import deserialize_value

from ..core.lineage import AccountNode, Lineage, read_lineage

log = dg.get_dagster_logger("pipelines_dagster.lineage")
LINEAGE_KEY = "pipelines_dagster/deploy_branch_lineage"
ACCOUNTS_KEY = "pipelines_dagster/deploy_branch_accounts"


class DeployBranchLineage(StateBackedDefinitionsLoader[str]):
    """The code location's definitions from the deploy branch's lineage: `whole(lineage)` everything (assets,
    jobs, resources, drift checks, sensors); `run_jobs[name](accounts)` a plan or apply job alone with its
    resources."""

    def __init__(self, settings, whole: Callable[[Lineage], dg.Definitions],
                 run_jobs: dict[str, Callable[[list[AccountNode]], dg.Definitions]]):
        self.settings, self.whole, self.run_jobs = settings, whole, run_jobs

    @property
    def defs_key(self) -> str:
        return LINEAGE_KEY

    def fetch_state(self) -> str:
        location, branch = self.settings.repo_url, self.settings.deploy_branch
        try:
            lineage = read_lineage(location, branch, cache_root=self.settings.cache_root,
                                   index_cache=self.settings.index_cache)
        except Exception as exc:  # the code location loads whatever happens to the repository
            lineage = Lineage(location=location, deploy_branch=branch,
                              notes=[f"reading the deploy branch failed: {type(exc).__name__}: {exc}"])
        for note in lineage.notes:
            log.warning(f"asset lineage: {note}")
        if lineage.commit:
            log.info(f"asset lineage: {len(lineage.accounts)} account(s), {len(lineage.units)} unit(s) at "
                     f"{lineage.deploy_branch} {lineage.commit[:12]}")
        # the accounts on their own, so that a plan or apply step reads them without the units
        DefinitionsLoadContext.get().add_to_pending_reconstruction_metadata(
            ACCOUNTS_KEY, json.dumps([vars(a) for a in lineage.accounts]))
        return lineage.to_json()

    def defs_from_state(self, state: str) -> dg.Definitions:
        return self.whole(Lineage.from_json(state))

    def load(self) -> dg.Definitions | dg.RepositoryDefinition:
        with warnings.catch_warnings():  # reconstruction metadata is "preview"; it is what state-backed defs use
            warnings.simplefilter("ignore", dg.PreviewWarning)
            context = DefinitionsLoadContext.get()
            if (context.load_type != DefinitionsLoadType.RECONSTRUCTION
                    or not {self.defs_key, ACCOUNTS_KEY} <= context.reconstruction_metadata.keys()):
                return self.build_defs()
            recorded = context.reconstruction_metadata
            for key in (self.defs_key, ACCOUNTS_KEY):  # kept for whatever reconstructs from this in turn
                context.add_to_pending_reconstruction_metadata(key, recorded[key])
            state, accounts = recorded[self.defs_key], recorded[ACCOUNTS_KEY]
            return dg.RepositoryDefinition(SINGLETON_REPOSITORY_NAME, repository_data=RunJobsFirst(
                run_jobs={name: partial(build, [AccountNode(**a) for a in json.loads(accounts)])
                          for name, build in self.run_jobs.items()},
                whole=lambda: self.defs_from_state(deserialize_value(state, str))))


class RunJobsFirst(RepositoryData):
    """A reconstructed code location: a plan or apply job from `run_jobs[name]()` alone; anything else from
    `whole()`, built when first needed."""

    def __init__(self, *, run_jobs: dict[str, Callable[[], dg.Definitions]], whole: Callable[[], dg.Definitions]):
        self.run_jobs = run_jobs
        self._whole = cache(lambda: _data(whole()))

    def has_job(self, job_name: str) -> bool:
        return job_name in self.run_jobs or self._whole().has_job(job_name)

    @cache  # noqa: B019 (one instance per reconstruction)
    def get_job(self, job_name: str) -> dg.JobDefinition:
        if job_name in self.run_jobs:
            return _data(self.run_jobs[job_name]()).get_job(job_name)
        return self._whole().get_job(job_name)

    def get_all_jobs(self):
        return self._whole().get_all_jobs()

    def get_top_level_resources(self):
        return self._whole().get_top_level_resources()

    def get_env_vars_by_top_level_resource(self):
        return self._whole().get_env_vars_by_top_level_resource()


def _data(defs: dg.Definitions) -> RepositoryData:
    return defs.get_repository_def()._repository_data  # noqa: SLF001 (what a RepositoryDefinition is made of)


def _from_whole(name: str):
    return lambda self, *args, **kwargs: getattr(self._whole(), name)(*args, **kwargs)


for _name, _method in vars(RepositoryData).items():  # everything else is the whole location's
    if callable(_method) and not _name.startswith("_") and _name not in vars(RunJobsFirst):
        setattr(RunJobsFirst, _name, _from_whole(_name))
