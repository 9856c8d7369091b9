"""The GitHub token read from a file (PIPELINES_GITHUB_TOKEN_FILE), so that no process needs it in its
environment: the client authenticates with it, and baseline pushes use it."""

import os

import pytest

from pipelines_dagster.defs.resources import GitHub
from pipelines_dagster.integrations.github import GitHubClient, GitHubError, token_from_env

REPO = "acme/infrastructure-live"
API = "https://api.github.com"


def test_the_token_file_wins_over_the_variable_and_authenticates(github_fake, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(github_fake.token + "\n")
    token_file.chmod(0o400)
    env = {"PIPELINES_GITHUB_TOKEN_FILE": str(token_file), "GITHUB_TOKEN": "expired-token"}
    github_fake.set_branch(REPO, "feature", "a" * 40)
    github_fake.add_pull_request(REPO, "feature", title="A change")

    client = GitHubClient.from_env(REPO, environ=env, base_url=github_fake.url, seconds_between_requests=0,
                                   seconds_between_writes=0)

    assert [pr.head_ref for pr in client.list_open_pull_requests()] == ["feature"]
    # the variable alone would be refused: the file's token is the one used
    with pytest.raises(GitHubError) as refused:
        GitHubClient.from_env(REPO, environ={**env, "PIPELINES_GITHUB_TOKEN_FILE": ""},
                              base_url=github_fake.url).list_open_pull_requests()
    assert refused.value.status == 401


def test_a_token_file_that_cannot_be_read_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"PIPELINES_GITHUB_TOKEN_FILE={missing}: cannot read the GitHub token"):
        token_from_env({"PIPELINES_GITHUB_TOKEN_FILE": str(missing)})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(ValueError, match="the file is empty"):
        token_from_env({"PIPELINES_GITHUB_TOKEN_FILE": str(empty)})
    assert token_from_env({"GITHUB_TOKEN": "from-the-variable"}) == "from-the-variable"


def test_baseline_pushes_use_the_token_file(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("ghs_fromthefile\n")
    token_file.chmod(0o600)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("PIPELINES_GITHUB_TOKEN_FILE", str(token_file))

    token = GitHub(REPO, API, 0).push_token("https://github.com/acme/infrastructure-live.git")

    assert token == "ghs_fromthefile"
    assert GitHub(None, API, 0).push_token("https://github.com/acme/infrastructure-live.git") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="units run as other users only when the pipeline is root")
def test_a_token_file_other_users_can_read_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("ghs_readablebyall\n")
    token_file.chmod(0o644)
    with pytest.raises(ValueError, match=r"can be read by other users \(mode 644\).*0600"):
        token_from_env({"PIPELINES_GITHUB_TOKEN_FILE": str(token_file)})
