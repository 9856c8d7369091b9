"""The orchestrator: two refs -> the classified, ordered infrastructure changes and their actions."""

import gc
import posixpath

from ..integrations import git as gitio
from ..integrations import git_tree
from .graph import nearest_in, reachable, waves
from .model import ChangeSet, ChangeType, Event, InfraChange, Problem, UnitKind, action_for
from .repo_files import PIPELINES_FILE, Accounts, ConfigError, PipelinesConfig, load_accounts, load_pipelines_config
from .repo_index import IndexBuilder, RepoIndex
from .terragrunt.traversal import Problem as EvalProblem
from .trust import trusted_config


def _is_envcommon(path: str) -> bool:
    return "_envcommon" in path.split("/")[:-1]


def _dir_is_ancestor(ancestor: str, path: str) -> bool:
    return ancestor == "" or path == ancestor or path.startswith(ancestor + "/")


def _unit_of(change: InfraChange) -> str:
    assert change.unit is not None, "a unit change names its unit"
    return change.unit


class _Hit:
    """How one unit is affected: its highest-precedence change type so far, and every trigger."""

    __slots__ = ("rank", "triggers", "changed_in_folder")

    def __init__(self) -> None:
        self.rank = len(ChangeType)
        self.triggers: set[str] = set()
        self.changed_in_folder = False

    def add(self, change_type: ChangeType, trigger: str) -> None:
        rank = change_type.precedence
        if rank < self.rank:
            self.rank = rank
        if change_type is ChangeType.MODULE_CHANGED:
            self.changed_in_folder = True
        self.triggers.add(trigger)


class Revision:
    """One commit of the repository as detection reads it: its configuration and accounts, and on demand its tree and
    unit index (the base and the head of a comparison are two)."""

    def __init__(self, repo, sha: str, config: PipelinesConfig | None = None):
        """`config`: the trusted configuration to read this commit with; None reads the commit's own."""
        self.repo, self.sha = repo, sha
        self._tree: git_tree.Tree | None = None
        self.index: RepoIndex | None = None
        self.config_problems: list[Problem] = []
        self.account_problems: list[Problem] = []
        if config is None:
            try:
                config = load_pipelines_config(self._texts([PIPELINES_FILE]).get(PIPELINES_FILE))
            except ConfigError as exc:
                config, self.config_problems = PipelinesConfig(), list(exc.problems)
        self.config = config
        self.accounts_file = config.accounts_file
        text = self._texts([self.accounts_file]).get(self.accounts_file)
        self.accounts: Accounts | None = None
        if text is not None:
            try:
                self.accounts, self.account_problems = load_accounts(text, self.accounts_file)
            except ConfigError as exc:
                self.account_problems = list(exc.problems)
                self.accounts = Accounts(file=self.accounts_file)

    def _texts(self, paths: list[str]) -> dict[str, str]:
        specs = [f"{self.sha}:{p}" for p in paths]
        found = git_tree.read_blobs(self.repo, specs)
        return {p: found[s].decode("utf-8", errors="replace") for p, s in zip(paths, specs, strict=True) if s in found}

    @property
    def tree(self) -> git_tree.Tree:
        if self._tree is None:
            self._tree = git_tree.read_tree(self.repo, self.sha)
        return self._tree

    @property
    def key(self) -> str:
        return self.sha + ":" + ",".join(self.config.units)


class Orchestrator:
    """Detects changes in one repository; keeps its caches across calls."""

    def __init__(self, repo, cache_dir=None, deploy_branch: str | None = None):
        """`cache_dir`: the parse cache on disk (None or False: in memory only); `deploy_branch`: the deployment's
        override of the deploy branch, whose configuration detection uses."""
        self.repo = repo
        self.deploy_branch = deploy_branch
        self.builder = IndexBuilder(lambda blobs: git_tree.read_blobs(repo, blobs), cache_dir or None)

    def index(self, side: Revision, other: Revision | None = None) -> RepoIndex:
        """The unit index of one side; the other side's stored evaluations are the best starting point."""
        if side.index is None:
            side.index = self.builder.build(side.key, lambda: side.tree, side.config.units,
                                            hint_trees=[other.key] if other is not None else [],
                                            extra_dependencies=side.config.dependencies)
        return side.index

    def repository_at(self, sha: str) -> tuple[Revision, RepoIndex]:
        """One commit's configuration, accounts and unit index (the same cached index detection uses)."""
        side = Revision(self.repo, sha)
        try:
            return side, self.index(side)
        finally:
            self.builder.close()

    def detect(self, base_ref: str, head_ref: str, event: Event) -> ChangeSet:
        # detection allocates many small, acyclic objects: cyclic GC passes over them are pure overhead
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._detect(base_ref, head_ref, event)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _detect(self, base_ref: str, head_ref: str, event: Event) -> ChangeSet:
        base_sha = gitio.resolve(self.repo, base_ref)
        head_sha = gitio.resolve(self.repo, head_ref)
        result = ChangeSet(base=base_sha, head=head_sha, event=event)
        config = self._trusted_config(result)
        head, base = Revision(self.repo, head_sha, config), Revision(self.repo, base_sha, config)
        ignore = config.ignore_spec()
        diff = git_tree.diff(self.repo, base_sha, head_sha)
        changed = [c for c in diff if not ignore.match_file(c.path)]
        if event is Event.PULL_REQUEST:
            self._configuration_changes(head_sha, {c.path for c in diff}, config, result)
        if not changed:
            return result
        try:
            return _Detection(self, base, head, changed, event, result).run()
        finally:
            self.builder.close()

    def _trusted_config(self, result: ChangeSet) -> PipelinesConfig:
        """The deploy branch's configuration; its problems become the change set's errors."""
        try:
            return trusted_config(self.repo, self.deploy_branch, accounts=False).config
        except ConfigError as exc:
            result.errors.extend(exc.problems)
            return PipelinesConfig()

    def _configuration_changes(self, head_sha: str, paths: set[str], config: PipelinesConfig,
                               result: ChangeSet) -> None:
        """A pull request's edits of the configuration are checked, and take effect only after merge."""
        edited = sorted(paths & {PIPELINES_FILE, config.accounts_file})
        if not edited:
            return
        result.notices.append(f"This pull request changes {' and '.join(edited)}: pipeline "
                              "configuration takes effect after merge; until then runs use the configuration, "
                              "accounts and roles of the deploy branch.")
        if PIPELINES_FILE in edited:
            result.errors.extend(Revision(self.repo, head_sha).config_problems)


def detect_changes(repo, base_ref: str, head_ref: str, event: Event, cache_dir=None,
                   deploy_branch: str | None = None) -> ChangeSet:
    return Orchestrator(repo, cache_dir, deploy_branch).detect(base_ref, head_ref, event)


class _Detection:
    def __init__(self, orch: Orchestrator, base: Revision, head: Revision, changed, event: Event,
                 result: ChangeSet):
        self.orch, self.base, self.head, self.changed, self.event, self.result = \
            orch, base, head, changed, event, result
        self.hits: dict[str, _Hit] = {}
        self.deleted_hits: dict[str, _Hit] = {}
        self._trigger: dict[str, str] = {}  # a path shown through a link -> the changed file that shows it
        self._account_entries: list[InfraChange] = []

    def run(self) -> ChangeSet:
        head_index = self.orch.index(self.head, self.base)
        # deleted units, and units that read a deleted file, are only visible at base (so are the files a
        # retargeted link to a folder showed)
        need_base = any(c.status in "DT" or c.path in head_index.dir_links for c in self.changed)
        base_index = self.orch.index(self.base, self.head) if need_base else None
        self.result.errors.extend(Problem(file=link, message=message) for link, message in head_index.link_problems)
        self._through_links(head_index, base_index)
        for change in self.changed:
            self._classify_file(change, head_index, base_index)
        self._account_changes()
        changes = self._unit_changes(head_index, base_index)
        self._order(changes, head_index, base_index)
        return self.result

    # ---- classification ----

    def _through_links(self, head: RepoIndex, base: RepoIndex | None) -> None:
        """Changes seen through symlinks are changes of the paths that show them, triggered by the changed file:
        a file that links show elsewhere, and every file a changed link to a folder shows."""
        seen = {c.path for c in self.changed}
        shown: list[git_tree.FileChange] = []
        for change in self.changed:
            sides = ([(head, self.head)] if change.status != "D" else []) + (
                [(base, self.base)] if base is not None and change.status != "A" else [])
            for index, side in sides:
                paths = index.shown_as(change.path)
                if change.path in index.dir_links:
                    paths += [p for p in side.tree.files if p.startswith(change.path + "/")]
                for path in paths:
                    if path not in seen:
                        seen.add(path)
                        shown.append(git_tree.FileChange(change.status, path))
                        self._trigger[path] = change.path
        self.changed = self.changed + shown

    def _hit(self, unit: str) -> _Hit:
        return self.hits.setdefault(unit, _Hit())

    @staticmethod
    def _by_location(module_dirs, path: str) -> ChangeType:
        folder = posixpath.dirname(path)
        if any(_dir_is_ancestor(d, folder) for d in module_dirs):
            return ChangeType.MODULE_SOURCE_CHANGED
        if _is_envcommon(path):
            return ChangeType.ENVCOMMON_CHANGED
        return ChangeType.HCL_CHANGED

    def _classify_file(self, change: git_tree.FileChange, head: RepoIndex, base: RepoIndex | None) -> None:
        path = change.path
        trigger = self._trigger.get(path, path)
        owner = head.owner(path)
        if owner is not None:
            self._hit(owner).add(ChangeType.MODULE_CHANGED, trigger)
        if base is not None:
            base_owner = base.owner(path)
            if base_owner is not None and base_owner not in head.units:
                self.deleted_hits.setdefault(base_owner, _Hit()).add(ChangeType.MODULE_DELETED, trigger)
        indexes = [head] + ([base] if base is not None and change.status != "A" else [])
        read_type = ChangeType.ENVCOMMON_CHANGED if _is_envcommon(path) else ChangeType.HCL_CHANGED
        for index in indexes:
            # a reader that also runs module code holding the file gets both; precedence picks the module
            for unit_path in index.readers(path):
                if unit_path != owner and unit_path in head.units:
                    self._hit(unit_path).add(read_type, trigger)
            for unit_path in index.module_users(path):
                if unit_path != owner and unit_path in head.units:
                    self._hit(unit_path).add(ChangeType.MODULE_SOURCE_CHANGED, trigger)
        if path.endswith(".hcl"):
            folder = posixpath.dirname(path)
            for unit_path in head.conservative:
                if unit_path != owner and (_dir_is_ancestor(folder, unit_path) or _is_envcommon(path)):
                    self._hit(unit_path).add(self._by_location(head.module_dirs(unit_path), path), trigger)

    def _unit_changes(self, head: RepoIndex, base: RepoIndex | None) -> list[InfraChange]:
        changes: list[InfraChange] = []
        base_units = self._base_unit_paths(head, base)
        for unit_path, hit in self.hits.items():
            change_type = list(ChangeType)[hit.rank]
            if hit.changed_in_folder and unit_path not in base_units:
                change_type = ChangeType.MODULE_ADDED
            account = self._account(unit_path, self.head, head.config_file(unit_path))
            changes.append(InfraChange(type=change_type, unit=unit_path, account=account,
                                       action=action_for(change_type, self.event), triggers=sorted(hit.triggers),
                                       kind=head.kind(unit_path)))
            if head.has_problems(unit_path):
                unit = head.units[unit_path]
                self._unit_problems(unit.problems)
                for dep, (file, line) in sorted(unit.dependencies.items()):
                    if dep not in head.units:
                        self.result.errors.append(Problem(file=file, message=f"dependency {dep!r} is not a unit",
                                                          line=line))
        for unit_path, hit in self.deleted_hits.items():
            assert base is not None  # deleted units are units of the base
            unit = base.units[unit_path]
            account = self._account(unit_path, self.base, unit.config_file)
            changes.append(InfraChange(type=ChangeType.MODULE_DELETED, unit=unit_path, account=account,
                                       action=action_for(ChangeType.MODULE_DELETED, self.event),
                                       triggers=sorted(hit.triggers), kind=unit.kind))
        return changes

    def _base_unit_paths(self, head: RepoIndex, base: RepoIndex | None) -> set[str]:
        """Which of the hit units already were units at base (else they are ModuleAdded)."""
        if base is not None:
            return set(base.units)
        added = {c.path for c in self.changed if c.status == "A"}
        existed = {u for u in self.hits if head.kind(u) is UnitKind.TERRAGRUNT and head.config_file(u) not in added}
        terraform = [u for u in self.hits if head.kind(u) is UnitKind.TERRAFORM]
        if terraform:  # plain root modules: look at just their folders at base
            files = git_tree.list_folders(self.orch.repo, self.base.sha, terraform)
            existed |= set(self.orch.builder.candidates(files, set(terraform), self.base.config.units)) & set(
                terraform)
        return existed

    def _unit_problems(self, problems: list[EvalProblem]) -> None:
        for p in problems:
            target = self.result.errors if p.severity == "error" else self.result.warnings
            problem = Problem(file=p.file, message=p.message, line=p.line)
            if str(problem) not in {str(x) for x in target}:
                target.append(problem)

    def _account(self, unit_path: str, side: Revision, config_file: str) -> str | None:
        account = side.config.account_for(unit_path, side.accounts)
        if account is None or side.accounts is None:
            return account
        if account not in side.accounts.entries and account not in side.accounts.raw:
            self.result.errors.append(Problem(
                file=config_file, message=f"unit {unit_path} belongs to account {account!r}, which is not in "
                             f"{side.accounts.file}"))
        return account

    # ---- accounts ----

    def _account_changes(self) -> None:
        head, base = self.head, self.base
        self.result.errors.extend(head.account_problems)
        head_raw = head.accounts.raw if head.accounts else {}
        base_raw = base.accounts.raw if base.accounts else {}
        lines = head.accounts.lines if head.accounts else {}
        file = head.config.accounts_file
        for name in sorted(set(head_raw) | set(base_raw)):
            if name in head_raw and name not in base_raw:
                change_type = ChangeType.ACCOUNT_ADDED
            elif name in base_raw and name not in head_raw:
                change_type = ChangeType.ACCOUNT_DELETED
                remaining = [u for u in (self.head.index.units if self.head.index else ())
                             if u.split("/", 1)[0] == name]
                note = f"; {len(remaining)} unit(s) under {name}/ remain and are not destroyed" if remaining else ""
                self.result.warnings.append(Problem(file=file, message=f"account {name!r} was removed{note}"))
            elif head_raw[name] != base_raw[name]:
                change_type = ChangeType.ACCOUNT_CHANGED
            else:
                continue
            entry = head_raw.get(name)
            if isinstance(entry, dict) and not entry.get("email"):
                self.result.errors.append(Problem(file=file, message=f"account {name!r}: email is missing",
                                                  line=lines.get(name)))
            self._account_entries.append(InfraChange(type=change_type, unit=None, account=name,
                                                     action=action_for(change_type, self.event), triggers=[file]))

    # ---- ordering ----

    def _order(self, changes: list[InfraChange], head: RepoIndex, base: RepoIndex | None) -> None:
        applies = [c for c in changes if not c.action.is_destroy]
        destroys = [c for c in changes if c.action.is_destroy]
        apply_graph = nearest_in({_unit_of(c) for c in applies}, head.dependency_graph)
        self._report_cycles(apply_graph, head)
        tiers = None
        if self.event is Event.PUSH and self.head.accounts is not None:
            tiers = {_unit_of(c): self._deploy_order(c.account, self.head) for c in applies}
        apply_waves = self._waves(apply_graph, tiers)
        for c in applies:
            c.depends_on = sorted(apply_graph[_unit_of(c)])
            c.wave = apply_waves[_unit_of(c)]
        first_destroy_wave = max((c.wave for c in applies), default=-1) + 1
        if destroys:
            assert base is not None  # deleted units are units of the base
            destroy_units = {_unit_of(c) for c in destroys}
            forward = nearest_in(destroy_units, base.dependency_graph)
            reverse: dict[str, set[str]] = {u: set() for u in destroy_units}
            for unit, deps in forward.items():
                for dep in deps:
                    reverse[dep].add(unit)  # a unit is destroyed after the units that depend on it
            dtiers = None
            if self.event is Event.PUSH and self.base.accounts is not None:
                dtiers = {_unit_of(c): -self._deploy_order(c.account, self.base) for c in destroys}
            dwaves = self._waves(reverse, dtiers)
            for c in destroys:
                c.depends_on = sorted(reverse[_unit_of(c)])
                c.wave = first_destroy_wave + dwaves[_unit_of(c)]
        ordered = sorted(changes, key=lambda c: (c.wave, c.unit or ""))
        self.result.changes = self._account_entries + ordered

    def _deploy_order(self, account: str | None, side: Revision) -> float:
        entry = side.accounts.entries.get(account) if (side.accounts and account) else None
        return float(entry.deploy_order) if entry is not None and entry.deploy_order is not None else float("inf")

    def _waves(self, graph: dict[str, set[str]], tiers: dict[str, float] | None) -> dict[str, int]:
        ordered, tiers_kept = waves(graph, tiers)
        if not tiers_kept:
            self.result.warnings.append(Problem(file=None, message="deploy_order conflicts with unit dependencies; "
                                                      "dependency order is used"))
        return ordered

    def _report_cycles(self, graph: dict[str, set[str]], index: RepoIndex) -> None:
        if not index.cycles:
            return
        reached = reachable(graph, index.dependency_graph)
        for cycle in index.cycles:
            if not reached.intersection(cycle):
                continue
            first = index.units[cycle[0]]
            self.result.errors.append(Problem(file=first.config_file,
                                              message="dependency cycle: " + " -> ".join(cycle + [cycle[0]])))

