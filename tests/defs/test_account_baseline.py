"""AccountAdded on merge: one pull request with the account's baseline, idempotent, from templates or default."""

import subprocess
from pathlib import Path

import pytest

from pipelines_dagster.core.model import Status
from tests.conftest import GitRepo, accounts_yml, terraform_binary
from tests.defs.conftest import GH_REPO
from tests.defs.jobs import run_job

BRANCH = "pipelines/account-baseline-sandbox"
SANDBOX = 'sandbox:\n  id: "333333333333"\n  email: sandbox@example.com\n'


@pytest.fixture
def remote(tmp_path, plugin_dir, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(terraform_binary()).parent}:/usr/bin:/bin")
    monkeypatch.setenv("PIPELINES_CACHE_DIR", str(tmp_path / "cache"))
    work = GitRepo(tmp_path / "work")
    work.commit({"accounts.yml": accounts_yml(), ".pipelines.yml": "deploy_branch: main\n"}, "accounts")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work.path), str(bare)], check=True)
    work.git("remote", "add", "origin", str(bare))
    work.path = work.path  # the work clone pushes to the bare "remote", as a developer would
    work.bare = bare
    return work


def branch_files(bare: Path, branch: str) -> dict[str, str]:
    names = subprocess.run(["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", branch], check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "--git-dir", str(bare), "show", f"{branch}:{n}"], check=True,
                              capture_output=True, text=True).stdout for n in names}


def merge_account(remote, files=None) -> tuple[str, str]:
    base = remote.git("rev-parse", "HEAD")
    head = remote.commit({"accounts.yml": accounts_yml() + SANDBOX, **(files or {})}, "add sandbox")
    remote.git("push", "-q", "origin", "main")
    return base, head


class Repo:  # what run_job needs: the repository's location
    def __init__(self, path):
        self.path = path


def test_merge_adding_an_account_opens_one_baseline_pull_request(remote, plugin_dir, github):
    base, head = merge_account(remote)
    github.set_branch(GH_REPO, BRANCH, "f" * 40)  # the branch GitHub will hold once pushed
    env = {"plugin_dir": str(plugin_dir)}
    run = run_job(Repo(remote.bare), env, "push", base, head, github_repo=GH_REPO)
    assert run.success, run.outcomes
    [out] = run.outcomes
    assert (out.change.type.value, out.status) == ("AccountAdded", Status.SUCCEEDED)
    files = branch_files(remote.bare, BRANCH)
    assert 'account_id   = "333333333333"' in files["sandbox/account.hcl"]
    assert 'aws_region = "us-east-1"' in files["sandbox/us-east-1/region.hcl"]
    bootstrap = files["sandbox/_global/pipelines-bootstrap/main.tf"]
    assert 'source        = "../../../modules/pipelines-bootstrap"' in bootstrap
    assert "aws_iam_openid_connect_provider" in files["modules/pipelines-bootstrap/main.tf"]
    assert "modules/pipelines-bootstrap/policies/main.tf" in files
    pulls = [p for p in github.pulls(GH_REPO) if p["head"]["ref"] == BRANCH]
    assert len(pulls) == 1 and pulls[0]["base"]["ref"] == "main" and "sandbox" in pulls[0]["title"]
    sha = subprocess.run(["git", "--git-dir", str(remote.bare), "rev-parse", BRANCH], capture_output=True,
                         text=True).stdout
    # a second run changes nothing: same branch commit, same single pull request
    run = run_job(Repo(remote.bare), env, "push", base, head, github_repo=GH_REPO)
    assert run.outcomes[0].status is Status.NO_CHANGES
    assert subprocess.run(["git", "--git-dir", str(remote.bare), "rev-parse", BRANCH], capture_output=True,
                          text=True).stdout == sha
    assert len([p for p in github.pulls(GH_REPO) if p["head"]["ref"] == BRANCH]) == 1


def test_templates_in_the_repository_are_used_in_local_mode(remote, plugin_dir):
    base, head = merge_account(remote, {
        "_templates/account-baseline/{{account_name}}/account.hcl": 'locals {\n  id = "{{account_id}}"\n  '
                                                                     'email = "{{ email }}"\n}\n'})
    run = run_job(Repo(remote.bare), {"plugin_dir": str(plugin_dir)}, "push", base, head)
    [out] = run.outcomes
    assert out.status is Status.SUCCEEDED and "local mode" in out.message
    files = branch_files(remote.bare, BRANCH)
    assert files["sandbox/account.hcl"] == 'locals {\n  id = "333333333333"\n  email = "sandbox@example.com"\n}\n'
    assert "modules/pipelines-bootstrap/main.tf" not in files


def test_pull_request_adding_an_account_only_validates(remote, plugin_dir):
    base = remote.git("rev-parse", "HEAD")
    remote.git("checkout", "-q", "-b", "feature")
    remote.commit({"accounts.yml": accounts_yml() + 'bad:\n  id: "12"\n  email: bad@example.com\n' + SANDBOX
                   + 'noemail:\n  id: "444444444444"\n'})
    remote.git("push", "-q", "origin", "feature")
    run = run_job(Repo(remote.bare), {"plugin_dir": str(plugin_dir)}, "pull_request", base, "feature")
    by_account = {o.change.account: o for o in run.outcomes}
    assert by_account["sandbox"].status is Status.VALIDATED, by_account["sandbox"]
    assert by_account["bad"].status is Status.FAILED and "12 digits" in by_account["bad"].message
    assert by_account["noemail"].status is Status.FAILED and "email is missing" in by_account["noemail"].message
    assert "accounts.yml:13: account 'noemail': email is missing" in run.report()  # in the PR comment
    assert subprocess.run(["git", "--git-dir", str(remote.bare), "rev-parse", "--verify", "-q", BRANCH],
                          capture_output=True).returncode != 0  # nothing pushed for a pull request


def test_the_baseline_authenticates_with_the_token_through_askpass_never_in_a_url(remote, tmp_path):
    from pipelines_dagster.core.account_factory import open_baseline
    from pipelines_dagster.core.repo_files import Account
    from tests.githttp import served_with_token

    token = "ghs_" + "BaselineToken7" * 3
    account = Account(id="333333333333", email="sandbox@example.com")
    with served_with_token(remote.bare, token) as (url, seen):
        with pytest.raises(Exception) as refused:  # the remote wants credentials: without the token, nothing
            open_baseline(url, "main", "sandbox", account, push_token=None)
        assert token not in str(refused.value)
        result = open_baseline(url, "main", "sandbox", account, push_token=token)
    assert result.pushed and f"x-access-token:{token}" in seen
    assert "sandbox/account.hcl" in branch_files(remote.bare, BRANCH)
