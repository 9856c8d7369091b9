"""Which configuration a run trusts: the deploy branch's, found through `refs/heads/...` only, never the ref under
review; and branch names that tags cannot shadow."""

import subprocess

import pytest

from pipelines_dagster.core.model import Event
from pipelines_dagster.core.orchestrator import detect_changes
from pipelines_dagster.core.repo_files import ConfigError
from pipelines_dagster.core.trust import deploy_branch, trusted_config
from pipelines_dagster.integrations.git import open_git_dir, resolve
from tests.conftest import GitRepo


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PIPELINES_DEPLOY_BRANCH", raising=False)
    r = GitRepo(tmp_path / "work")
    r.commit({".pipelines.yml": "deploy_branch: main\nroles: {plan: pipelines-plan}\n",
              "dev/a/main.tf": 'terraform {\n  backend "s3" {}\n}\n'}, "init")
    return r


def test_a_branch_naming_itself_the_deploy_branch_is_not_believed(work):
    work.git("checkout", "-q", "-b", "evil")
    work.commit({".pipelines.yml": "deploy_branch: evil\nroles: {plan: pipelines-apply}\n"})
    # the work repository has the attacker's branch checked out: its HEAD is not the default branch
    git_dir = work.path / ".git"
    assert deploy_branch(git_dir) == "main"
    trusted = trusted_config(git_dir)
    assert (trusted.branch, trusted.sha) == ("main", work.git("rev-parse", "refs/heads/main"))
    assert trusted.config.roles.plan == "pipelines-plan"


def test_the_deploy_branch_is_the_default_branch_unless_the_deployment_names_another(work, tmp_path):
    work.git("checkout", "-q", "-b", "release")
    work.commit({".pipelines.yml": "deploy_branch: release\n"})
    work.git("checkout", "-q", "main")
    work.commit({".pipelines.yml": "deploy_branch: release\n"})
    bare = tmp_path / "remote.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    # whoever can push the default branch must not choose what is applied: only the deployment names another
    with pytest.raises(ConfigError, match="names the deploy branch 'release', which is not the default branch "
                                          "'main': only the deployment may choose it .set PIPELINES_DEPLOY_BRANCH"):
        deploy_branch(bare)
    assert deploy_branch(bare, "release") == "release"
    work.commit({".pipelines.yml": "deploy_branch: main\n"})
    bare_again = tmp_path / "remote-again.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare_again))
    assert deploy_branch(bare_again) == "main"  # naming the default branch itself is fine


def test_a_missing_deploy_branch_is_an_error_not_a_fallback_to_the_ref_under_review(work):
    with pytest.raises(ConfigError, match="deploy branch 'production' does not exist"):
        trusted_config(work.path / ".git", "production")


def test_a_tag_named_like_the_deploy_branch_never_stands_for_it(work):
    main = work.git("rev-parse", "HEAD")
    work.git("checkout", "-q", "-b", "side")
    evil = work.commit({"dev/evil/main.tf": 'terraform {\n  backend "s3" {}\n}\n'})
    work.git("tag", "main", evil)
    work.git("checkout", "-q", "main")
    git_dir = work.path / ".git"
    assert subprocess.run(["git", "-C", str(work.path), "rev-parse", "main"], capture_output=True,
                          text=True).stdout.strip() == evil  # what git itself picks: the tag
    assert resolve(git_dir, "main") == main
    assert resolve(git_dir, "main~0") == main
    assert resolve(git_dir, "refs/tags/main") == evil  # asked for explicitly, a tag is still a tag
    work.git("tag", "v1", evil)
    assert resolve(git_dir, "v1") == evil


def test_mirrors_hold_branches_and_pull_request_heads_but_no_tags(work, tmp_path):
    bare = tmp_path / "remote.git"
    work.git("clone", "-q", "--bare", str(work.path), str(bare))
    work.git("remote", "add", "origin", str(bare))
    evil = work.commit({"dev/evil/main.tf": "# evil\n"})
    work.git("push", "-q", "origin", f"{evil}:refs/tags/main", f"{evil}:refs/pull/7/head")
    mirror = open_git_dir(f"file://{bare}", cache_root=tmp_path / "cache")
    refs = subprocess.run(["git", "--git-dir", str(mirror), "for-each-ref", "--format=%(refname)"],
                          capture_output=True, text=True).stdout.split()
    assert "refs/heads/main" in refs and "refs/pull/7/head" in refs
    assert not [r for r in refs if r.startswith("refs/tags/")]
    assert resolve(mirror, "main") == work.git("rev-parse", "HEAD~1")
    assert deploy_branch(mirror) == "main"  # the mirror's HEAD names the remote's default branch


def test_detection_of_a_pull_request_uses_the_deploy_branch_configuration(work):
    base = work.git("rev-parse", "HEAD")
    work.git("checkout", "-q", "-b", "hide")
    # the pull request tries to hide its change and to declare a unit of its own
    work.commit({".pipelines.yml": 'deploy_branch: hide\nignore: ["**"]\nunits: [stacks/x]\n',
                 "dev/a/main.tf": 'terraform {\n  backend "s3" {}\n}\n# edited\n', "stacks/x/main.tf": "# x\n"})
    found = detect_changes(work.path / ".git", base, "hide", Event.PULL_REQUEST)
    assert [(c.type.value, c.unit) for c in found.changes] == [("ModuleChanged", "dev/a")]
    assert any(".pipelines.yml" in n and "after merge" in n for n in found.notices)
    assert any("after merge" in w for w in found.to_dict()["warnings"])


def test_a_pull_requests_broken_configuration_is_reported_while_the_deploy_branchs_is_used(work):
    base = work.git("rev-parse", "HEAD")
    work.git("checkout", "-q", "-b", "broken")
    work.commit({".pipelines.yml": "roles: {plan: 7, nonsense: true}\n",
                 "dev/a/main.tf": 'terraform {\n  backend "s3" {}\n}\n# edited\n'})
    found = detect_changes(work.path / ".git", base, "broken", Event.PULL_REQUEST)
    assert [c.unit for c in found.changes] == ["dev/a"]
    assert any(e.file == ".pipelines.yml" and "nonsense" in e.message for e in found.errors)


def test_a_pushs_step_destroys_only_what_its_head_removed_and_applies_only_what_it_has(work):
    """A step's changes come from storage: a destroy of a unit the head still has (or an apply of one it does not)
    is refused, whatever the storage says."""
    from pipelines_dagster.core.model import InfraChange
    from pipelines_dagster.core.trust import LaunchRefused, check_push_changes

    base = work.git("rev-parse", "HEAD")
    head = work.commit({"dev/b/main.tf": 'terraform {\n  backend "s3" {}\n}\n'})
    git_dir = work.path / ".git"

    def change(unit: str, action: str) -> InfraChange:
        return InfraChange(type="ModuleChanged", unit=unit, account="dev", action=action)

    check_push_changes(git_dir, base, head, [change("dev/b", "apply"), change("dev/a", "apply")])
    with pytest.raises(LaunchRefused, match="dev/a: a destroy of a unit that .* still has"):
        check_push_changes(git_dir, base, head, [change("dev/a", "destroy")])
    with pytest.raises(LaunchRefused, match="dev/c: an apply of a unit that .* does not have"):
        check_push_changes(git_dir, base, head, [change("dev/c", "apply")])
    gone = work.commit({"dev/b/main.tf": None})
    check_push_changes(git_dir, head, gone, [change("dev/b", "destroy")])
