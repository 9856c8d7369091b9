"""The GitHub client against the GitHub fake, over HTTP through PyGithub."""

import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipelines_dagster.core.github_updater import comment_key
from pipelines_dagster.integrations.github import (
    BODY_LIMIT,
    GitHubClient,
    GitHubError,
    body_budget,
    marker,
)
from pipelines_dagster.integrations.github_retry import RetryPolicy

REPO = "acme/infrastructure-live"
SHA_A = "a" * 40
SHA_B = "b" * 40
FAST = RetryPolicy(total=4, backoff_factor=0.01, backoff_max=0.05, secondary_rate_wait=0.2, max_rate_limit_wait=5)


def make_client(fake, **kwargs) -> GitHubClient:
    kwargs.setdefault("token", "test-token")
    kwargs.setdefault("retry", FAST)
    return GitHubClient(REPO, base_url=fake.url, seconds_between_requests=0, seconds_between_writes=0, **kwargs)


@pytest.fixture
def client(github_fake):
    c = make_client(github_fake)
    yield c
    c.close()


@pytest.fixture
def pr(github_fake):
    github_fake.set_branch(REPO, "feature", SHA_A)
    number = github_fake.add_pull_request(REPO, "feature", title="Change mysql")
    github_fake.clear_log()
    return number


# ---------------------------------------------------------------- comments

def test_comment_upsert_creates_once_then_updates_in_place(github_fake, client, pr):
    first = client.upsert_comment(pr, "Detecting changes...", key=comment_key(SHA_A))
    second = client.upsert_comment(pr, "3 changes planned", key=comment_key(SHA_A))
    assert first.created and not first.updated
    assert second.updated and second.id == first.id
    comments = github_fake.comments(REPO, pr)
    assert len(comments) == 1
    assert comments[0]["body"] == f"<!-- pipelines-dagster:sha={SHA_A} -->\n3 changes planned"
    assert [(r.method, r.status) for r in github_fake.writes()] == [("POST", 201), ("PATCH", 200)]

    unchanged = client.upsert_comment(pr, "3 changes planned", key=comment_key(SHA_A))
    assert not unchanged.created and not unchanged.updated
    assert len(github_fake.writes()) == 2  # no write when nothing changed

    other_sha = client.upsert_comment(pr, "for the next push", key=comment_key(SHA_B))
    assert other_sha.created and len(github_fake.comments(REPO, pr)) == 2


def test_comment_upsert_with_known_id_is_a_single_request(github_fake, client, pr):
    first = client.upsert_comment(pr, "started", key=comment_key(SHA_A))
    github_fake.clear_log()
    done = client.upsert_comment(pr, "finished", key=comment_key(SHA_A), comment_id=first.id)
    assert done.id == first.id and done.updated
    assert [(r.method, r.path) for r in github_fake.log] == [("PATCH", f"/repos/{REPO}/issues/comments/{first.id}")]
    assert github_fake.comments(REPO, pr)[0]["body"].endswith("\nfinished")


def test_comment_upsert_with_a_deleted_comment_id_recreates_it(github_fake, client, pr):
    gone = client.upsert_comment(pr, "started", key=comment_key(SHA_A))
    github_fake.repo(REPO).issues[pr].comments.clear()
    again = client.upsert_comment(pr, "finished", key=comment_key(SHA_A), comment_id=gone.id)
    assert again.created and again.id != gone.id
    assert [c["body"] for c in github_fake.comments(REPO, pr)] == [f"{marker(comment_key(SHA_A))}\nfinished"]


def test_comment_marker_found_on_a_later_page(github_fake, client, pr):
    for i in range(130):  # the client lists 100 per page: the marked comment is on page 2
        github_fake.add_comment(REPO, pr, f"review remark {i}", user="reviewer")
    github_fake.add_comment(REPO, pr, f"{marker(comment_key(SHA_A))}\nold report")
    for i in range(90):
        github_fake.add_comment(REPO, pr, f"later remark {i}", user="reviewer")
    github_fake.clear_log()
    result = client.upsert_comment(pr, "new report", key=comment_key(SHA_A))
    assert result.updated and not result.created
    listing = github_fake.requests("GET", r"/comments$")
    assert len(listing) == 2 and "page=2" in listing[1].query
    assert [r.method for r in github_fake.writes()] == ["PATCH"]
    assert len(github_fake.comments(REPO, pr)) == 221
    assert github_fake.comments(REPO, pr)[130]["body"].endswith("\nnew report")


def test_a_comment_merely_mentioning_the_marker_is_not_taken_over(github_fake, client, pr):
    quoted = f"> quoting the bot:\n> {marker(comment_key(SHA_A))}\nplease fix"
    github_fake.add_comment(REPO, pr, quoted, user="reviewer")
    client.upsert_comment(pr, "report", key=comment_key(SHA_A))
    bodies = [c["body"] for c in github_fake.comments(REPO, pr)]
    assert bodies == [quoted, f"{marker(comment_key(SHA_A))}\nreport"]


def test_comment_over_the_limit_is_rejected_by_github_with_422(github_fake, client, pr):
    key = comment_key(SHA_A)
    fits = client.upsert_comment(pr, "x" * body_budget(key), key=key)
    assert len(fits.body) == BODY_LIMIT
    with pytest.raises(GitHubError) as e:
        client.upsert_comment(pr, "x" * (body_budget(key) + 1), key=key)
    assert e.value.status == 422 and e.value.message == "Validation Failed"
    assert "Body is too long (maximum is 65536 characters)" in str(e.value)
    assert not e.value.transient
    assert len(github_fake.comments(REPO, pr)[0]["body"]) == BODY_LIMIT  # left as it was


# ---------------------------------------------------------------- only our own comments and issues

def register_app(fake) -> str:
    """A GitHub App on the fake (slug pipelines-dagster, installation 99); returns its private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    fake.add_app(1234, public, installation_id=99)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def app_client(fake) -> GitHubClient:
    """A client authenticated as the installation of a GitHub App registered on the fake."""
    return make_client(fake, token=None, app_id=1234, private_key=register_app(fake), installation_id=99)


@pytest.fixture(params=["token", "app"])
def auth_client(request, github_fake):
    """(client, its login, a login that is someone else): a token's user, or a GitHub App's bot."""
    if request.param == "token":
        c = make_client(github_fake)
        yield c, "pipelines-bot", "mallory"
    else:
        c = app_client(github_fake)
        yield c, "pipelines-dagster[bot]", "pipelines-bot"  # the token's user is not the app
    c.close()


def test_a_marker_comment_planted_by_someone_else_is_left_alone(github_fake, auth_client, pr):
    client, ours, other = auth_client
    key = comment_key(SHA_A)
    planted = f"{marker(key)}\n### ✅ pipelines-dagster plan: succeeded"
    github_fake.add_comment(REPO, pr, planted, user=other)
    created = client.upsert_comment(pr, "1 change planned", key=key)
    updated = client.upsert_comment(pr, "1 change failed", key=key)
    assert created.created and updated.updated and updated.id == created.id
    comments = github_fake.comments(REPO, pr)
    assert [(c["user"]["login"], c["body"]) for c in comments] == [
        (other, planted), (ours, f"{marker(key)}\n1 change failed")]
    identity = github_fake.requests("GET", r"^/(user|app)$")
    assert [r.path for r in identity] == (["/user"] if ours == "pipelines-bot" else ["/app"])  # once per client
    assert identity[0].status == 200


def test_an_earlier_comment_of_ours_is_found_and_updated(github_fake, auth_client, pr):
    client, ours, other = auth_client
    key = comment_key(SHA_A)
    github_fake.add_comment(REPO, pr, f"{marker(key)}\nby someone else", user=other)
    mine = github_fake.add_comment(REPO, pr, f"{marker(key)}\nearlier report", user=ours)
    result = client.upsert_comment(pr, "new report", key=key)
    assert result.id == mine and result.updated
    assert [c["body"] for c in github_fake.comments(REPO, pr)] == [f"{marker(key)}\nby someone else",
                                                                    f"{marker(key)}\nnew report"]


def test_a_marker_issue_opened_by_someone_else_is_left_alone(github_fake, auth_client):
    client, ours, other = auth_client
    key = f"apply-failed={SHA_A}"
    planted = github_fake.add_issue(REPO, "Apply succeeded", f"{marker(key)}\nall good", user=other,
                                    labels=("pipelines-dagster",))
    assert client.find_issue(key) is None
    opened = client.upsert_issue(key, "Apply failed", "prod/mysql failed")
    again = client.upsert_issue(key, "Apply failed", "prod/mysql and prod/redis failed")
    assert opened.created and opened.number != planted and again.updated and again.number == opened.number
    assert github_fake.issue(REPO, opened.number)["user"]["login"] == ours
    assert client.close_issue(key).number == opened.number
    left = github_fake.issue(REPO, planted)
    assert (left["state"], left["title"], left["body"]) == ("open", "Apply succeeded", f"{marker(key)}\nall good")
    assert github_fake.comments(REPO, planted) == []


def test_an_installation_token_given_as_a_token_is_a_clear_error(github_fake, pr):
    now = int(time.time())
    app_jwt = jwt.encode({"iss": "1234", "iat": now - 60, "exp": now + 300}, register_app(github_fake),
                         algorithm="RS256")
    token = requests.post(f"{github_fake.url}/app/installations/99/access_tokens",
                          headers={"Authorization": f"Bearer {app_jwt}", "User-Agent": "t"}).json()["token"]
    github_fake.add_comment(REPO, pr, f"{marker(comment_key(SHA_A))}\nreport", user="pipelines-dagster[bot]")
    github_fake.clear_log()
    with pytest.raises(GitHubError) as e:
        make_client(github_fake, token=token).upsert_comment(pr, "report", key=comment_key(SHA_A))
    assert e.value.status == 403 and "GET /user" in str(e.value) and "GitHub App" in str(e.value)
    assert github_fake.writes() == []


# ---------------------------------------------------------------- statuses

def test_status_set_and_read_back(github_fake, client, pr):
    client.set_status(SHA_A, "pending", description="Planning 3 changes", target_url="http://dagster:3000/runs/1")
    done = client.set_status(SHA_A, "failure", description="1 of 3 changes failed: " + "x" * 200,
                             target_url="http://dagster:3000/runs/1")
    assert len(done.description) == 140  # shortened to GitHub's limit instead of being refused
    statuses = github_fake.statuses(REPO, SHA_A)
    assert [(s["context"], s["state"]) for s in statuses] == [("pipelines-dagster", "pending"),
                                                               ("pipelines-dagster", "failure")]
    assert statuses[-1]["target_url"] == "http://dagster:3000/runs/1" and len(statuses[-1]["description"]) == 140
    with pytest.raises(ValueError):
        client.set_status(SHA_A, "done")


def test_status_for_an_unknown_commit_is_a_clear_error(client):
    with pytest.raises(GitHubError) as e:
        client.set_status("c" * 40, "success")
    assert e.value.status == 422 and "No commit found for SHA" in e.value.message


# ---------------------------------------------------------------- retries

def test_server_errors_are_retried_until_success(github_fake, client, pr):
    github_fake.fail(r"/comments$", times=2, method="POST")
    result = client.upsert_comment(pr, "report", key=comment_key(SHA_A))
    assert result.created
    assert [r.status for r in github_fake.requests("POST")] == [502, 502, 201]
    assert len(github_fake.comments(REPO, pr)) == 1


def test_updates_are_retried_too(github_fake, client, pr):
    client.upsert_comment(pr, "v1", key=comment_key(SHA_A))
    github_fake.fail(r"/issues/comments/\d+$", status=503, method="PATCH")
    assert client.upsert_comment(pr, "v2", key=comment_key(SHA_A)).updated
    assert [r.status for r in github_fake.requests("PATCH")] == [503, 200]


def test_persistent_server_errors_give_up_with_the_status(github_fake, client):
    github_fake.fail(r"/branches/", times=50)
    with pytest.raises(GitHubError) as e:
        client.branch_sha("main")
    assert e.value.status == 502 and e.value.transient
    assert github_fake.count("GET", r"/branches/") == FAST.total + 1


def test_secondary_rate_limit_waits_for_retry_after(github_fake, client, pr):
    github_fake.secondary_rate_limit(r"/statuses/", retry_after=1, method="POST")
    start = time.monotonic()
    client.set_status(SHA_A, "success")
    elapsed = time.monotonic() - start
    assert elapsed >= 0.95
    assert [r.status for r in github_fake.requests("POST", r"/statuses/")] == [403, 201]
    assert len(github_fake.statuses(REPO, SHA_A)) == 1


def test_429_without_retry_after_waits_the_secondary_wait(github_fake, client):
    github_fake.too_many_requests(r"/branches/", retry_after=None)
    start = time.monotonic()
    assert client.branch_sha("main") == github_fake.repo(REPO).branches["main"]
    assert time.monotonic() - start >= FAST.secondary_rate_wait * 0.9
    assert [r.status for r in github_fake.requests("GET")] == [429, 200]


def test_primary_rate_limit_waits_until_the_reset(github_fake, client, pr):
    reset = github_fake.exhaust_rate_limit(reset_in=1)
    result = client.list_open_pull_requests()
    assert time.time() >= reset  # it did not retry before the reset time
    assert [p.number for p in result] == [pr]
    assert [r.status for r in github_fake.requests("GET", r"/pulls$")] == [403, 200]


def test_rate_limit_wait_beyond_the_allowed_maximum_fails_fast(github_fake):
    impatient = make_client(github_fake, retry=RetryPolicy(total=3, max_rate_limit_wait=2))
    github_fake.exhaust_rate_limit(reset_in=600)
    start = time.monotonic()
    with pytest.raises(GitHubError) as e:
        impatient.branch_sha("main")
    assert time.monotonic() - start < 1
    assert e.value.status == 403 and e.value.rate_limited and e.value.transient
    assert "rate limit" in str(e.value).lower()
    assert github_fake.count() == 1


def test_retry_after_beyond_the_allowed_maximum_fails_fast(github_fake):
    impatient = make_client(github_fake, retry=RetryPolicy(total=3, max_rate_limit_wait=2))
    github_fake.secondary_rate_limit(r"/statuses/", retry_after=100_000, method="POST")
    start = time.monotonic()
    with pytest.raises(GitHubError) as e:
        impatient.set_status(SHA_A, "pending")
    assert time.monotonic() - start < 1  # not the 100,000 s GitHub asked for, nor the capped maximum
    assert e.value.rate_limited and e.value.transient
    assert github_fake.count("POST", r"/statuses/") == 1


def test_a_403_that_is_no_rate_limit_is_not_retried(github_fake, client, pr):
    github_fake.inject(r"/comments$", 403, method="POST",
                       body={"message": "Resource not accessible by integration",
                             "documentation_url": "https://docs.github.com/rest"})
    with pytest.raises(GitHubError) as e:
        client.upsert_comment(pr, "report", key=comment_key(SHA_A))
    assert e.value.status == 403 and not e.value.rate_limited and not e.value.transient
    assert e.value.message == "Resource not accessible by integration"
    assert github_fake.count("POST") == 1


# ---------------------------------------------------------------- errors

def test_not_found_is_a_clear_error(client):
    with pytest.raises(GitHubError) as e:
        client.get_pull_request(404)
    assert e.value.status == 404 and e.value.message == "Not Found"
    assert f"{REPO}#404" in str(e.value)
    assert client.branch_sha("no-such-branch") is None


def test_unknown_repository_is_a_clear_error(github_fake):
    c = GitHubClient("acme/missing", token="test-token", base_url=github_fake.url, retry=FAST,
                     seconds_between_requests=0, seconds_between_writes=0)
    with pytest.raises(GitHubError) as e:
        c.list_open_pull_requests()
    assert e.value.status == 404 and "acme/missing" in str(e.value)


def test_wrong_token_is_a_clear_error_and_not_retried(github_fake):
    c = make_client(github_fake, token="expired-token")
    with pytest.raises(GitHubError) as e:
        c.list_open_pull_requests()
    assert (e.value.status, e.value.message) == (401, "Bad credentials")
    assert not e.value.transient
    assert github_fake.count() == 1


def test_unreachable_api_is_a_transient_error_without_status():
    c = GitHubClient(REPO, token="t", base_url="http://127.0.0.1:9", retry=RetryPolicy(total=1, backoff_factor=0),
                     seconds_between_requests=0, seconds_between_writes=0, timeout=2)
    with pytest.raises(GitHubError) as e:
        c.branch_sha("main")
    assert e.value.status is None and e.value.transient


# ---------------------------------------------------------------- pull requests

def test_open_pull_requests_tell_forks_apart_in_one_request(github_fake, client, pr):
    github_fake.add_repo("contributor/infrastructure-live", fork_of=REPO)
    github_fake.set_branch("contributor/infrastructure-live", "typo", SHA_B)
    fork_pr = github_fake.add_pull_request(REPO, "typo", head_repo="contributor/infrastructure-live")
    github_fake.set_branch(REPO, "other", "c" * 40)
    github_fake.add_pull_request(REPO, "other", state="closed")
    github_fake.clear_log()

    prs = client.list_open_pull_requests()
    assert [(p.number, p.is_fork, p.head_repo, p.head_sha, p.base_ref) for p in prs] == [
        (pr, False, REPO, SHA_A, "main"), (fork_pr, True, "contributor/infrastructure-live", SHA_B, "main")]
    assert github_fake.count() == 1  # no per-PR fetches behind PyGithub's lazy objects

    github_fake.delete_repo("contributor/infrastructure-live")
    deleted = {p.number: p for p in client.list_open_pull_requests()}[fork_pr]
    assert deleted.head_repo is None and deleted.is_fork


def test_open_pull_requests_filtered_by_base(github_fake, client, pr):
    github_fake.set_branch(REPO, "release", "d" * 40)
    github_fake.set_branch(REPO, "hotfix", "e" * 40)
    into_release = github_fake.add_pull_request(REPO, "hotfix", "release")
    assert [p.number for p in client.list_open_pull_requests(base="release")] == [into_release]
    assert [p.number for p in client.list_open_pull_requests(base="main")] == [pr]


def test_pull_requests_of_a_commit(github_fake, client, pr):
    [open_pr] = client.pull_requests_for_commit(SHA_A)
    assert (open_pr.number, open_pr.merged) == (pr, False)
    merge_sha = github_fake.merge_pull_request(REPO, pr)
    [merged] = client.pull_requests_for_commit(merge_sha)
    assert (merged.number, merged.merged, merged.merge_commit_sha, merged.state) == (pr, True, merge_sha, "closed")
    assert client.pull_requests_for_commit(SHA_A)[0].number == pr
    assert client.branch_sha("main") == merge_sha


def test_pull_request_creation_is_idempotent(github_fake, client, pr):
    github_fake.set_branch(REPO, "pipelines/account-baseline-dev", SHA_B)
    created, was_created = client.create_or_update_pull_request(
        "pipelines/account-baseline-dev", "main", "Baseline for account dev", "Adds the dev account")
    assert was_created and created.head_ref == "pipelines/account-baseline-dev" and created.head_sha == SHA_B
    github_fake.clear_log()

    again, was_created = client.create_or_update_pull_request(
        "pipelines/account-baseline-dev", "main", "Baseline for account dev", "Adds the dev account")
    assert not was_created and again.number == created.number
    assert github_fake.writes() == []  # nothing changed, nothing written

    updated, was_created = client.create_or_update_pull_request(
        "pipelines/account-baseline-dev", "main", "Baseline for account dev (2)", "Adds the dev account, v2")
    assert not was_created and updated.number == created.number and updated.title == "Baseline for account dev (2)"
    assert [r.method for r in github_fake.writes()] == ["PATCH"]
    assert len(github_fake.pulls(REPO)) == 2
    assert github_fake.pull(REPO, created.number)["body"] == "Adds the dev account, v2"
    assert github_fake.pull(REPO, pr)["title"] == "Change mysql"  # the other open pull request is untouched


def test_pull_request_created_concurrently_is_updated_not_duplicated(github_fake, client):
    github_fake.set_branch(REPO, "pipelines/account-baseline-prod", SHA_B)
    # someone opens it between our lookup and our create: the lookup is answered empty, the create then gets 422
    github_fake.inject(r"/pulls$", 200, method="GET", body=[])
    github_fake.add_pull_request(REPO, "pipelines/account-baseline-prod", title="by hand")
    pr, was_created = client.create_or_update_pull_request("pipelines/account-baseline-prod", "main",
                                                           "Baseline for account prod", "body")
    assert not was_created and pr.title == "Baseline for account prod"
    assert [r.status for r in github_fake.requests("POST", r"/pulls$")] == [422]
    assert len(github_fake.pulls(REPO)) == 1


# ---------------------------------------------------------------- issues

def test_issue_opened_updated_and_closed_by_marker(github_fake, client, pr):
    key = f"apply-failed={SHA_A}"
    github_fake.add_issue(REPO, "unrelated", "someone else's issue", labels=("pipelines-dagster",))
    opened = client.upsert_issue(key, "Apply failed: prod/mysql", "prod/mysql failed")
    assert opened.created and opened.labels == ("pipelines-dagster",)
    updated = client.upsert_issue(key, "Apply failed: prod/mysql, prod/redis", "both failed")
    assert updated.updated and updated.number == opened.number
    same = client.upsert_issue(key, "Apply failed: prod/mysql, prod/redis", "both failed")
    assert not same.updated and not same.created

    issues = {i["number"]: i for i in github_fake.issues(REPO)}
    assert len(issues) == 2
    assert issues[opened.number]["title"] == "Apply failed: prod/mysql, prod/redis"
    assert issues[opened.number]["body"] == f"{marker(key)}\nboth failed"

    closed = client.close_issue(key, comment="Fixed by a later run")
    assert closed.state == "closed" and closed.number == opened.number
    assert github_fake.issue(REPO, opened.number)["state"] == "closed"
    assert github_fake.issue(REPO, opened.number)["state_reason"] == "completed"
    assert [c["body"] for c in github_fake.comments(REPO, opened.number)] == ["Fixed by a later run"]
    assert github_fake.issue(REPO, 2)["state"] == "open"  # the unrelated issue is untouched
    assert client.close_issue(key) is None  # nothing left to close

    reopened = client.upsert_issue(key, "Apply failed again", "again")
    assert reopened.created and reopened.number != opened.number


def test_pull_requests_in_the_issues_list_are_not_taken_for_the_issue(github_fake, client):
    key = "drift"
    github_fake.set_branch(REPO, "drift-fix", SHA_B)
    github_fake.add_pull_request(REPO, "drift-fix", body=f"{marker(key)}\ncopied from the issue")
    github_fake.repo(REPO).issues[1].labels.append({"name": "pipelines-dagster"})
    github_fake.clear_log()
    issue = client.upsert_issue(key, "Drift in 2 units", "prod/mysql, prod/redis")
    assert issue.created
    assert github_fake.pull(REPO, 1)["body"] == f"{marker(key)}\ncopied from the issue"
    assert [r.method for r in github_fake.log] == ["GET", "POST"]  # one listing page, no per-issue fetches


# ---------------------------------------------------------------- configuration

def test_from_env_uses_github_api_url_and_token(github_fake, pr):
    env = {"GITHUB_TOKEN": "test-token"}
    c = GitHubClient.from_env(REPO, environ=env, base_url=github_fake.url, retry=FAST, seconds_between_requests=0,
                              seconds_between_writes=0)
    assert c.base_url == github_fake.url
    assert [p.number for p in c.list_open_pull_requests()] == [pr]
    with pytest.raises(ValueError):
        GitHubClient.from_env(None, environ={"GITHUB_TOKEN": "x"})
    with pytest.raises(ValueError):
        GitHubClient.from_env(REPO, environ={})


def test_github_app_installation_auth(github_fake, pr, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    github_fake.add_app(1234, public, installation_id=99)
    env = {"PIPELINES_GITHUB_APP_ID": "1234", "PIPELINES_GITHUB_APP_PRIVATE_KEY": pem.replace("\n", "\\n"),
           "PIPELINES_GITHUB_INSTALLATION_ID": "99"}
    c = GitHubClient.from_env(REPO, environ=env, base_url=github_fake.url, retry=FAST, seconds_between_requests=0,
                              seconds_between_writes=0)
    c.upsert_comment(pr, "from the app", key=comment_key(SHA_A))
    c.set_status(SHA_A, "success")
    assert github_fake.comments(REPO, pr)[0]["user"]["login"] == "pipelines-dagster[bot]"
    assert github_fake.count("POST", "/access_tokens") == 1  # one token, reused

    key_file = tmp_path / "app.pem"
    key_file.write_text(pem)
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    assert make_client(github_fake, token=None, app_id=1234, private_key=str(key_file),
                       installation_id=99).branch_sha("feature") == SHA_A
    with pytest.raises(GitHubError) as e:
        make_client(github_fake, token=None, app_id=1234, private_key=wrong, installation_id=99).branch_sha("main")
    assert e.value.status == 401
