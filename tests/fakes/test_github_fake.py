"""The GitHub fake answers as GitHub documents: shapes, pagination, errors, rate limits, app tokens."""

import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github import Auth, Github, GithubException

from tests.fakes.github_fake import BODY_LIMIT, GitHubFake

REPO = "acme/infrastructure-live"
SHA_A = "a" * 40
SHA_B = "b" * 40


class Api:
    """Plain HTTP to the fake, as curl would do it."""

    def __init__(self, fake: GitHubFake, token: str = "test-token"):
        self.fake = fake
        self.s = requests.Session()
        self.s.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                               "User-Agent": "tests"})

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        url = path if path.startswith("http") else f"{self.fake.url}{path}"
        return self.s.request(method, url, **kwargs)


@pytest.fixture
def api(github_fake):
    return Api(github_fake)


def test_repository_and_object_urls_point_back_at_the_fake(github_fake, api):
    r = api("GET", f"/repos/{REPO}")
    assert r.status_code == 200
    body = r.json()
    assert body["full_name"] == REPO and body["default_branch"] == "main"
    assert body["url"] == f"{github_fake.url}/repos/{REPO}"
    assert api("GET", body["url"]).json()["id"] == body["id"]


def test_unknown_objects_are_404_with_githubs_error_shape(api):
    for path in ("/repos/acme/nope", f"/repos/{REPO}/pulls/42", f"/repos/{REPO}/issues/42",
                 f"/repos/{REPO}/issues/comments/42", f"/repos/{REPO}/git/ref/heads/nope", "/nope"):
        r = api("GET", path)
        assert r.status_code == 404, path
        assert r.json()["message"] == "Not Found"
        assert r.json()["documentation_url"].startswith("https://docs.github.com/")
    r = api("GET", f"/repos/{REPO}/branches/nope")
    assert (r.status_code, r.json()["message"]) == (404, "Branch not found")


def test_authentication_errors(github_fake):
    assert Api(github_fake, "wrong")("GET", f"/repos/{REPO}").json() == {
        "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}
    r = requests.get(f"{github_fake.url}/repos/{REPO}", headers={"User-Agent": "x"})
    assert (r.status_code, r.json()["message"]) == (401, "Requires authentication")
    r = requests.get(f"{github_fake.url}/repos/{REPO}", headers={"Authorization": "token test-token",
                                                                   "User-Agent": ""})
    assert r.status_code == 403 and "User-Agent" in r.json()["message"]


def test_rate_limit_headers_count_requests_per_identity(github_fake, api):
    first = api("GET", f"/repos/{REPO}").headers
    second = api("GET", f"/repos/{REPO}").headers
    assert first["X-RateLimit-Limit"] == "5000"
    assert int(second["X-RateLimit-Remaining"]) == int(first["X-RateLimit-Remaining"]) - 1
    assert int(second["X-RateLimit-Used"]) == int(first["X-RateLimit-Used"]) + 1
    assert int(first["X-RateLimit-Reset"]) > time.time()
    limits = api("GET", "/rate_limit").json()
    assert limits["resources"]["core"]["used"] == 2 == limits["rate"]["used"]  # /rate_limit itself is free


def test_conditional_requests_answer_304_uncounted_until_something_changed(github_fake, api):
    github_fake.add_repo(REPO)
    github_fake.add_pull_request(REPO, "feature", head_sha=SHA_A)
    first = api("GET", f"/repos/{REPO}/pulls")
    etag = first.headers["ETag"]
    again = api("GET", f"/repos/{REPO}/pulls", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["X-RateLimit-Used"] == first.headers["X-RateLimit-Used"]  # not counted
    github_fake.add_token("other-token", "someone")
    other = Api(github_fake, "other-token")
    assert other("GET", f"/repos/{REPO}/pulls", headers={"If-None-Match": etag}).status_code == 200  # per identity
    github_fake.add_pull_request(REPO, "feature-2", head_sha=SHA_B)
    changed = api("GET", f"/repos/{REPO}/pulls", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and len(changed.json()) == 2 and changed.headers["ETag"] != etag
    assert int(changed.headers["X-RateLimit-Used"]) == int(first.headers["X-RateLimit-Used"]) + 1


def test_comment_pagination_follows_githubs_link_headers(github_fake, api):
    number = github_fake.add_issue(REPO, "many comments")
    for i in range(75):
        github_fake.add_comment(REPO, number, f"comment {i}")
    r = api("GET", f"/repos/{REPO}/issues/{number}/comments", params={"per_page": 30})
    assert [c["body"] for c in r.json()] == [f"comment {i}" for i in range(30)]
    links = requests.utils.parse_header_links(r.headers["Link"])
    assert {link["rel"] for link in links} == {"next", "last"}
    by_rel = {link["rel"]: link["url"] for link in links}
    assert "page=2" in by_rel["next"] and "page=3" in by_rel["last"] and "per_page=30" in by_rel["next"]
    last = api("GET", by_rel["last"])
    assert [c["body"] for c in last.json()] == [f"comment {i}" for i in range(60, 75)]
    assert {link["rel"] for link in requests.utils.parse_header_links(last.headers["Link"])} == {"prev", "first"}
    assert len(api("GET", f"/repos/{REPO}/issues/{number}/comments").json()) == 30  # default per_page
    assert len(api("GET", f"/repos/{REPO}/issues/{number}/comments", params={"per_page": 500}).json()) == 75
    small = github_fake.add_issue(REPO, "few comments")
    github_fake.add_comment(REPO, small, "only")
    assert "Link" not in api("GET", f"/repos/{REPO}/issues/{small}/comments").headers


def test_comment_body_limit_is_65536_characters(github_fake, api):
    number = github_fake.add_issue(REPO, "limits")
    path = f"/repos/{REPO}/issues/{number}/comments"
    assert api("POST", path, json={"body": "x" * BODY_LIMIT}).status_code == 201
    r = api("POST", path, json={"body": "x" * (BODY_LIMIT + 1)})
    assert r.status_code == 422
    assert r.json()["message"] == "Validation Failed"
    assert r.json()["errors"] == [{"resource": "IssueComment", "code": "unprocessable", "field": "data",
                                   "message": "Body is too long (maximum is 65536 characters)"}]
    comment_id = github_fake.comments(REPO, number)[0]["id"]
    r = api("PATCH", f"/repos/{REPO}/issues/comments/{comment_id}", json={"body": "é" * (BODY_LIMIT + 1)})
    assert r.status_code == 422
    assert len(github_fake.comments(REPO, number)) == 1
    assert github_fake.comments(REPO, number)[0]["body"] == "x" * BODY_LIMIT
    r = api("POST", f"/repos/{REPO}/issues", json={"title": "t", "body": "y" * (BODY_LIMIT + 1)})
    assert r.status_code == 422 and r.json()["errors"][0]["resource"] == "Issue"


def test_pull_request_create_rules(github_fake, api):
    github_fake.set_branch(REPO, "feature", SHA_A)
    path = f"/repos/{REPO}/pulls"
    created = api("POST", path, json={"title": "Add", "head": "feature", "base": "main", "body": "b"})
    assert created.status_code == 201
    pr = created.json()
    assert pr["head"]["sha"] == SHA_A and pr["head"]["repo"]["full_name"] == REPO and pr["merged"] is False
    assert created.headers["Location"] == pr["url"]

    again = api("POST", path, json={"title": "Add", "head": "feature", "base": "main"})
    assert again.status_code == 422
    assert again.json()["errors"] == [{"resource": "PullRequest", "code": "custom",
                                       "message": "A pull request already exists for acme:feature."}]
    assert api("POST", path, json={"title": "x", "head": "missing", "base": "main"}).json()["errors"][0] == {
        "resource": "PullRequest", "code": "invalid", "field": "head"}
    github_fake.set_branch(REPO, "same", github_fake.repo(REPO).branches["main"])
    r = api("POST", path, json={"title": "x", "head": "same", "base": "main"})
    assert r.status_code == 422 and r.json()["errors"][0]["message"] == "No commits between main and same"
    assert len(github_fake.pulls(REPO)) == 1


def test_issue_and_pull_request_numbers_are_shared_and_issues_list_pull_requests(github_fake, api):
    first = github_fake.add_issue(REPO, "an issue", labels=("bug",))
    github_fake.set_branch(REPO, "feature", SHA_A)
    pr = github_fake.add_pull_request(REPO, "feature")
    created = api("POST", f"/repos/{REPO}/issues", json={"title": "third", "labels": ["bug", "ops"]}).json()
    assert (first, pr, created["number"]) == (1, 2, 3)
    listed = api("GET", f"/repos/{REPO}/issues").json()
    assert [i["number"] for i in listed] == [3, 2, 1]  # newest first
    assert "pull_request" in listed[1] and "pull_request" not in listed[0]
    assert [i["number"] for i in api("GET", f"/repos/{REPO}/issues", params={"labels": "bug,ops"}).json()] == [3]
    assert [i["number"] for i in api("GET", f"/repos/{REPO}/issues", params={"creator": "acme"}).json()] == [2]
    api("PATCH", f"/repos/{REPO}/issues/1", json={"state": "closed"})
    assert [i["number"] for i in api("GET", f"/repos/{REPO}/issues").json()] == [3, 2]
    closed = api("GET", f"/repos/{REPO}/issues", params={"state": "closed"}).json()
    assert [(i["number"], i["state_reason"]) for i in closed] == [(1, "completed")]


def test_list_shape_omits_fields_only_the_single_pull_request_has(github_fake, api):
    github_fake.set_branch(REPO, "feature", SHA_A)
    number = github_fake.add_pull_request(REPO, "feature")
    listed = api("GET", f"/repos/{REPO}/pulls").json()[0]
    assert "merged" not in listed and "mergeable" not in listed
    assert api("GET", f"/repos/{REPO}/pulls/{number}").json()["merged"] is False


def test_head_filter_needs_the_owner_prefix_as_on_github(github_fake, api):
    github_fake.set_branch(REPO, "one", SHA_A)
    github_fake.set_branch(REPO, "two", SHA_B)
    github_fake.add_pull_request(REPO, "one")
    github_fake.add_pull_request(REPO, "two")
    path = f"/repos/{REPO}/pulls"
    assert [p["head"]["ref"] for p in api("GET", path, params={"head": "acme:two"}).json()] == ["two"]
    assert len(api("GET", path, params={"head": "two"}).json()) == 2  # silently ignored
    assert api("GET", path, params={"head": "someone:two"}).json() == []


def test_fork_pull_requests_name_the_fork_as_head_repository(github_fake, api):
    github_fake.add_repo("contributor/infrastructure-live", fork_of=REPO)
    github_fake.set_branch("contributor/infrastructure-live", "patch", SHA_B)
    created = api("POST", f"/repos/{REPO}/pulls", json={"title": "from a fork", "head": "contributor:patch",
                                                         "base": "main"}).json()
    assert created["head"]["repo"]["full_name"] == "contributor/infrastructure-live"
    assert created["head"]["repo"]["fork"] is True
    assert created["base"]["repo"]["full_name"] == REPO
    github_fake.delete_repo("contributor/infrastructure-live")
    assert api("GET", f"/repos/{REPO}/pulls/{created['number']}").json()["head"]["repo"] is None


def test_statuses_are_validated_and_combined(github_fake, api):
    github_fake.add_commit(REPO, SHA_A)
    path = f"/repos/{REPO}/statuses/{SHA_A}"
    assert api("POST", path, json={"state": "done"}).status_code == 422
    r = api("POST", path, json={"state": "success", "description": "d" * 141})
    assert r.status_code == 422 and r.json()["errors"][0]["message"] == \
        "description is too long (maximum is 140 characters)"
    assert api("POST", path, json={"state": "success", "target_url": "ftp://x"}).status_code == 422
    assert api("POST", f"/repos/{REPO}/statuses/{SHA_B}", json={"state": "success"}).json()["message"] == \
        f"No commit found for SHA: {SHA_B}"

    assert api("GET", f"/repos/{REPO}/commits/{SHA_A}/status").json()["state"] == "pending"  # no statuses yet
    assert api("POST", path, json={"state": "pending", "context": "ci"}).status_code == 201
    api("POST", path, json={"state": "success", "context": "ci", "description": "d" * 140})
    api("POST", path, json={"state": "success"})
    combined = api("GET", f"/repos/{REPO}/commits/{SHA_A}/status").json()
    assert combined["state"] == "success" and combined["total_count"] == 2
    assert {s["context"]: s["state"] for s in combined["statuses"]} == {"ci": "success", "default": "success"}
    api("POST", path, json={"state": "error", "context": "other"})
    assert api("GET", f"/repos/{REPO}/commits/{SHA_A}/status").json()["state"] == "failure"
    assert len(api("GET", f"/repos/{REPO}/commits/{SHA_A}/statuses").json()) == 4
    github_fake.set_branch(REPO, "feature", SHA_A)
    assert api("GET", f"/repos/{REPO}/commits/feature/status").json()["sha"] == SHA_A


def test_pull_requests_of_a_commit_open_then_merged(github_fake, api):
    github_fake.set_branch(REPO, "feature", SHA_A)
    number = github_fake.add_pull_request(REPO, "feature")
    assert [p["number"] for p in api("GET", f"/repos/{REPO}/commits/{SHA_A}/pulls").json()] == [number]
    merge_sha = github_fake.merge_pull_request(REPO, number)
    merged = api("GET", f"/repos/{REPO}/commits/{merge_sha}/pulls").json()
    assert [(p["number"], p["state"], p["merge_commit_sha"]) for p in merged] == [(number, "closed", merge_sha)]
    assert merged[0]["merged_at"] is not None
    assert github_fake.repo(REPO).branches["main"] == merge_sha
    assert api("GET", f"/repos/{REPO}/commits/{'c' * 40}/pulls").status_code == 422


def test_branches_and_refs_with_slashes(github_fake, api):
    github_fake.set_branch(REPO, "pipelines/account-baseline-dev", SHA_B)
    assert api("GET", f"/repos/{REPO}/branches/pipelines/account-baseline-dev").json()["commit"]["sha"] == SHA_B
    ref = api("GET", f"/repos/{REPO}/git/ref/heads/pipelines/account-baseline-dev").json()
    assert ref["ref"] == "refs/heads/pipelines/account-baseline-dev" and ref["object"]["sha"] == SHA_B


def test_injected_failures_answer_before_state_and_are_logged(github_fake, api):
    number = github_fake.add_issue(REPO, "x")
    github_fake.fail(r"/comments$", times=2, method="POST")
    statuses = [api("POST", f"/repos/{REPO}/issues/{number}/comments", json={"body": "hi"}).status_code
                for _ in range(3)]
    assert statuses == [502, 502, 201]
    assert len(github_fake.comments(REPO, number)) == 1
    log = github_fake.requests("POST", r"/comments$")
    assert [(r.status, r.injected) for r in log] == [(502, True), (502, True), (201, False)]
    assert github_fake.count("POST") == 3 and len(github_fake.writes()) == 3

    github_fake.secondary_rate_limit(retry_after=7)
    r = api("GET", f"/repos/{REPO}")
    assert r.status_code == 403 and r.headers["Retry-After"] == "7"
    assert r.json()["message"].startswith("You have exceeded a secondary rate limit")
    github_fake.too_many_requests(retry_after=3)
    assert api("GET", f"/repos/{REPO}").status_code == 429
    assert api("GET", f"/repos/{REPO}").status_code == 200


def test_exhausted_primary_rate_limit_until_reset(github_fake, api):
    reset = github_fake.exhaust_rate_limit(reset_in=1)
    r = api("GET", f"/repos/{REPO}")
    assert r.status_code == 403
    assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Reset"] == str(reset)
    assert r.json()["message"].startswith("API rate limit exceeded")
    time.sleep(max(0.0, reset - time.time()) + 0.05)
    ok = api("GET", f"/repos/{REPO}")
    assert ok.status_code == 200 and int(ok.headers["X-RateLimit-Remaining"]) == 4999


def test_github_app_installation_token(github_fake):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    github_fake.add_app(4242, public, installation_id=77)
    gh = Github(auth=Auth.AppAuth(4242, pem).get_installation_auth(77), base_url=github_fake.url,
                seconds_between_requests=0, seconds_between_writes=0)
    assert gh.get_repo(REPO).full_name == REPO
    assert [(r.method, r.path, r.status) for r in github_fake.log] == [
        ("POST", "/app/installations/77/access_tokens", 201), ("GET", f"/repos/{REPO}", 200)]

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"iss": "4242", "iat": int(time.time()) - 60, "exp": int(time.time()) + 300}, other,
                        algorithm="RS256")
    r = requests.post(f"{github_fake.url}/app/installations/77/access_tokens",
                      headers={"Authorization": f"Bearer {forged}", "User-Agent": "t"})
    assert r.status_code == 401
    r = requests.post(f"{github_fake.url}/app/installations/77/access_tokens",
                      headers={"Authorization": "token test-token", "User-Agent": "t"})
    assert (r.status_code, r.json()["message"]) == (401, "A JSON web token could not be decoded")
    gh_unknown = Github(auth=Auth.AppAuth(4242, pem).get_installation_auth(78), base_url=github_fake.url,
                        seconds_between_requests=0, seconds_between_writes=0)
    with pytest.raises(GithubException) as e:
        gh_unknown.get_repo(REPO)
    assert e.value.status == 404


def test_the_authenticated_app_answers_its_jwt_only(github_fake):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    github_fake.add_app(4242, public, installation_id=77, slug="infra-pipeline", name="Infra Pipeline")
    now = int(time.time())
    app_jwt = jwt.encode({"iss": "4242", "iat": now - 60, "exp": now + 300}, key, algorithm="RS256")
    r = requests.get(f"{github_fake.url}/app", headers={"Authorization": f"Bearer {app_jwt}", "User-Agent": "t"})
    assert r.status_code == 200
    app = r.json()
    assert (app["id"], app["slug"], app["name"], app["owner"]["login"]) == (4242, "infra-pipeline", "Infra Pipeline",
                                                                             "acme")
    assert app["html_url"] == "https://github.com/apps/infra-pipeline" and app["installations_count"] == 1
    for field in ("node_id", "client_id", "description", "external_url", "created_at", "updated_at", "permissions",
                  "events"):
        assert field in app

    token = requests.post(f"{github_fake.url}/app/installations/77/access_tokens",
                          headers={"Authorization": f"Bearer {app_jwt}", "User-Agent": "t"}).json()["token"]
    installation = Api(github_fake, token)
    assert installation("GET", "/app").status_code == 401  # an installation token is not the app's JWT
    refused = installation("GET", "/user")
    assert (refused.status_code, refused.json()["message"]) == (403, "Resource not accessible by integration")
    assert Api(github_fake)("GET", "/app").json()["message"] == "A JSON web token could not be decoded"
    number = github_fake.add_issue(REPO, "x")
    written = installation("POST", f"/repos/{REPO}/issues/{number}/comments", json={"body": "hi"})
    assert written.json()["user"]["login"] == "infra-pipeline[bot]"


def test_api_prefix_like_github_enterprise():
    with GitHubFake(api_prefix="/api/v3") as fake:
        fake.add_repo(REPO)
        gh = Github(auth=Auth.Token("test-token"), base_url=fake.url, seconds_between_requests=0,
                    seconds_between_writes=0)
        assert fake.url.endswith("/api/v3")
        assert gh.get_repo(REPO).default_branch == "main"
        assert fake.log[-1].path == f"/repos/{REPO}"
