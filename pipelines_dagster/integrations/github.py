"""GitHub access for the pipeline: a small client over PyGithub (no Dagster imports).

What the pipeline needs and nothing more: open pull requests (with head sha, base branch and head repository, to
tell forks apart), the pull requests of a commit, one comment per head sha updated in place, commit statuses, one
issue per subject opened/updated/closed, an idempotent pull request for a branch, and a branch's head sha.

Comments and issues are found again by a hidden HTML marker at the start of their body,
``<!-- pipelines-dagster:<key> -->`` (for the per-sha comment the key is ``sha=<sha>``), among those written by the
client's own identity only (anyone can write the marker): the client updates the one it finds and never adds a
second. The identity is looked up once, when first needed: the token's login (``GET /user``), or for a GitHub App,
whose installation tokens may not read ``/user``, ``<slug>[bot]`` from ``GET /app`` (authenticated as the app).

Transient failures are retried inside PyGithub's HTTP layer (github_retry.py). Every failure reaches the caller as
one exception type, ``GitHubError``, carrying GitHub's status and message.
"""

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TypedDict

import requests
from github import Auth, Github, GithubException, GithubIntegration
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.GithubObject import NotSet
from github.PullRequest import PullRequest
from github.Requester import Requester
from urllib3.util.retry import Retry

from .github_etags import ETagCache, ListPage
from .github_records import CommentInfo, IssueInfo, PullRequestInfo, StatusInfo, issue_info, pull_request_info
from .github_retry import RateLimitAwareRetry, RetryPolicy

DEFAULT_API_URL = "https://api.github.com"
BODY_LIMIT = 65536  # characters, for issue, pull request and comment bodies
STATUS_DESCRIPTION_LIMIT = 140
STATUS_CONTEXT = "pipelines-dagster"
ISSUE_LABEL = "pipelines-dagster"
MARKER_NAMESPACE = "pipelines-dagster"


class GitHubError(Exception):
    """A GitHub API call failed. `status` is the HTTP status (None when no answer came back), `message` GitHub's
    message, `errors` GitHub's validation errors."""

    def __init__(self, operation: str, status: int | None, message: str, errors: list | None = None,
                 documentation_url: str | None = None, rate_limited: bool = False):
        self.operation, self.status, self.message = operation, status, message
        self.errors = list(errors or [])
        self.documentation_url = documentation_url
        self.rate_limited = rate_limited
        details = "; ".join(_error_text(e) for e in self.errors)
        text = f"{operation}: GitHub answered {status}: {message}" if status else f"{operation}: {message}"
        super().__init__(f"{text} ({details})" if details else text)

    @property
    def transient(self) -> bool:
        """Worth retrying later: no answer, a server error or a rate limit."""
        return self.status is None or self.status >= 500 or self.status == 429 or self.rate_limited


def _error_text(err) -> str:
    if isinstance(err, dict):
        return err.get("message") or " ".join(f"{k}={v}" for k, v in err.items() if k != "resource")
    return str(err)


def marker(key: str) -> str:
    """The hidden marker identifying a comment or issue written by the pipeline."""
    if "--" in key or ">" in key or "\n" in key:
        raise ValueError(f"marker key must not contain '--', '>' or newlines: {key!r}")
    return f"<!-- {MARKER_NAMESPACE}:{key} -->"


def body_budget(key: str) -> int:
    """Characters left for a body once the marker line is added (GitHub's limit is 65,536 characters)."""
    return BODY_LIMIT - len(marker(key)) - 1


def _with_marker(key: str, body: str) -> str:
    mark = marker(key)
    return body if body.startswith(mark) else f"{mark}\n{body}"


def _has_marker(key: str, body: str | None) -> bool:
    return bool(body and body.lstrip().startswith(marker(key)))


TOKEN_FILE_VAR = "PIPELINES_GITHUB_TOKEN_FILE"


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The GitHub token: the file named by PIPELINES_GITHUB_TOKEN_FILE (re-read on each call: mounted secrets
    rotate), else GITHUB_TOKEN. A file that cannot be read is an error naming it."""
    env = os.environ if environ is None else environ
    path = env.get(TOKEN_FILE_VAR)
    if not path:
        return env.get("GITHUB_TOKEN") or None
    try:
        with open(path, encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode & 0o777
            if os.geteuid() == 0 and mode & 0o077:  # units run as other users then
                raise ValueError(f"{TOKEN_FILE_VAR}={path}: the GitHub token can be read by other users (mode "
                                 f"{mode:o}): units, which run as other users, could read it; make it readable by "
                                 "its owner only (0600)")
            token = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"{TOKEN_FILE_VAR}={path}: cannot read the GitHub token: {exc.strerror}") from None
    if not token:
        raise ValueError(f"{TOKEN_FILE_VAR}={path}: the file is empty")
    return token


class _HttpOptions(TypedDict):
    """Connection options shared by the repository client and the App client."""
    timeout: int
    user_agent: str
    retry: Retry


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"message": (text or "")[:500]}


def _next_link(link: str) -> str | None:
    """The `rel="next"` URL of a Link header."""
    for part in link.split(","):
        target, _, rel = part.partition(";")
        if 'rel="next"' in rel:
            return target.strip().strip("<>")
    return None


class GitHubClient:
    """The pipeline's GitHub operations on one repository (`owner/name`)."""

    def __init__(self, repo: str, *, token: str | None = None, app_id: int | str | None = None,
                 private_key: str | None = None, installation_id: int | str | None = None,
                 base_url: str | None = None, retry: RetryPolicy | None = None, timeout: int = 15,
                 per_page: int = 100, seconds_between_requests: float | None = 0.25,
                 seconds_between_writes: float | None = 0.1, user_agent: str = "pipelines-dagster",
                 etags: ETagCache | None = None):
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ValueError(f"GitHub repository must be 'owner/name', not {repo!r}")
        self.repo_name = repo
        self.owner = repo.split("/")[0]
        self.base_url = (base_url or DEFAULT_API_URL).rstrip("/")
        self.retry_policy = retry or RetryPolicy()
        self.per_page, self.etags = per_page, etags or ETagCache()
        self._app_auth: Auth.AppAuth | None = None
        if app_id is not None or installation_id is not None or private_key is not None:
            if app_id is None or installation_id is None or not private_key:
                raise ValueError("GitHub App auth needs app id, private key and installation id together")
            self._app_auth = Auth.AppAuth(str(app_id), _load_private_key(private_key))
            auth: Auth.Auth = self._app_auth.get_installation_auth(int(installation_id))
        elif token:
            auth = Auth.Token(token)
        else:
            raise ValueError("GitHub auth needs a token, or a GitHub App id, private key and installation id")
        p = self.retry_policy
        self._http: _HttpOptions = {
            "timeout": timeout, "user_agent": user_agent,
            "retry": RateLimitAwareRetry(total=p.total, backoff_factor=p.backoff_factor, backoff_max=p.backoff_max,
                            secondary_rate_wait=p.secondary_rate_wait, max_rate_limit_wait=p.max_rate_limit_wait,
                            # parsed Retry-After is capped here: one second over the maximum still fails
                            retry_after_max=int(p.max_rate_limit_wait) + 1, raise_on_status=False)}
        self._gh = Github(auth=auth, base_url=self.base_url, per_page=per_page,
                          seconds_between_requests=seconds_between_requests,
                          seconds_between_writes=seconds_between_writes, lazy=True, **self._http)
        self._repo = self._gh.get_repo(repo)  # lazy: no request
        self._login: str | None = None
        self._login_lock = threading.Lock()

    @classmethod
    def from_env(cls, repo: str, environ: Mapping[str, str] | None = None, **kwargs) -> "GitHubClient":
        """A client for `repo` (owner/name) whose credentials come from the environment, read now: GITHUB_TOKEN
        (or a file named by PIPELINES_GITHUB_TOKEN_FILE), or PIPELINES_GITHUB_APP_ID +
        PIPELINES_GITHUB_APP_PRIVATE_KEY (the key or its path) + PIPELINES_GITHUB_INSTALLATION_ID. `base_url`
        and the rest are the caller's (its settings)."""
        env = os.environ if environ is None else environ
        if not repo:
            raise ValueError("no GitHub repository (PIPELINES_GITHUB_REPO, owner/name)")
        if env.get("PIPELINES_GITHUB_APP_ID"):
            return cls(repo, app_id=env["PIPELINES_GITHUB_APP_ID"],
                       private_key=env.get("PIPELINES_GITHUB_APP_PRIVATE_KEY"),
                       installation_id=env.get("PIPELINES_GITHUB_INSTALLATION_ID"), **kwargs)
        return cls(repo, token=token_from_env(env), **kwargs)

    @property
    def github(self) -> Github:
        """The underlying PyGithub client (lazy: objects are fetched only when read)."""
        return self._gh

    def close(self) -> None:
        self._gh.close()

    @contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        try:
            yield
        except RateLimitExceededExceedsMaxWait as e:
            raise GitHubError(operation, e.status, f"{_message(e)} (rate limited; the reset is {e.wait:.0f}s away, "
                              f"more than the {self.retry_policy.max_rate_limit_wait:.0f}s allowed)",
                              rate_limited=True) from e
        except GithubException as e:
            data = e.data if isinstance(e.data, dict) else {}
            headers = {k.lower(): v for k, v in (e.headers or {}).items()}
            rate_limited = e.status in (403, 429) and (
                headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers
                or Requester.isRateLimitError(_message(e)))
            raise GitHubError(operation, e.status, _message(e), data.get("errors"), data.get("documentation_url"),
                              rate_limited=rate_limited) from e
        except requests.RequestException as e:
            raise GitHubError(operation, None, f"no usable answer from {self.base_url}: {e}") from e

    # ------------------------------------------------------------------ identity

    @property
    def login(self) -> str:
        """The login on the comments and issues this client writes (looked up once, on first use)."""
        with self._login_lock:
            if self._login is None:
                self._login = self._app_login() if self._app_auth is not None else self._token_login()
            return self._login

    def _token_login(self) -> str:
        with self._call("read the login of the GitHub token (GET /user), which tells our comments and issues from "
                        "others'; a GitHub App installation token cannot: configure the App's id, key and "
                        "installation instead"):
            _, data = self._gh.requester.requestJsonAndCheck("GET", "/user")
            return data["login"]

    def _app_login(self) -> str:
        with self._call("read the GitHub App's slug (GET /app), which tells our comments and issues from others'"):
            integration = GithubIntegration(auth=self._app_auth, base_url=self.base_url, **self._http)
            try:
                return f"{integration.get_app().slug}[bot]"
            finally:
                integration.close()

    def _ours(self, item) -> bool:
        """Written by this client's identity (a comment or an issue)."""
        return item.user is not None and item.user.login.lower() == self.login.lower()

    # ------------------------------------------------------------------ pull requests

    def list_open_pull_requests(self, base: str | None = None) -> list[PullRequestInfo]:
        """Open pull requests (oldest first), optionally only those into `base`. Conditional requests: a page
        that did not change since this client's cache last read it costs no rate limit (304)."""
        with self._call(f"list open pull requests of {self.repo_name}"):
            query = {"state": "open", "sort": "created", "direction": "asc", "per_page": self.per_page,
                     **({"base": base} if base else {})}
            return [pull_request_info(self._gh.create_from_raw_data(PullRequest, raw))
                    for raw in self._pages(f"/repos/{self.repo_name}/pulls", query)]

    def _pages(self, path: str, query: dict) -> list[dict]:
        """Every item of a list endpoint, page by page, each asked with the ETag of its last answer."""
        items: list[dict] = []
        url: str | None = path
        params: dict | None = query
        while url:
            key = url + "?" + "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()))
            known = self.etags.get(key)
            status, headers, output = self._gh.requester.requestJson(
                "GET", url, params, headers={"If-None-Match": known.etag} if known else None)
            if status == 304 and known is not None:
                page = known
            elif status >= 400:
                raise self._gh.requester.createException(status, headers, _json_object(output))
            else:
                headers = {k.lower(): v for k, v in headers.items()}
                page = ListPage(etag=headers.get("etag", ""), items=json.loads(output),
                                next_url=_next_link(headers.get("link", "")))
                if page.etag:
                    self.etags.put(key, page)
            items.extend(page.items)
            url, params = page.next_url, None
        return items

    def get_pull_request(self, number: int) -> PullRequestInfo:
        with self._call(f"get pull request {self.repo_name}#{number}"):
            return pull_request_info(self._repo.get_pull(number))

    def pull_requests_for_commit(self, sha: str) -> list[PullRequestInfo]:
        """Pull requests associated with a commit: on the default branch, the merged pull request that brought it;
        elsewhere, the open pull requests that contain it."""
        with self._call(f"find pull requests of commit {sha} in {self.repo_name}"):
            return [pull_request_info(pr) for pr in self._repo.get_commit(sha).get_pulls()]

    def create_or_update_pull_request(self, head: str, base: str, title: str, body: str,
                                      draft: bool = False) -> tuple[PullRequestInfo, bool]:
        """The one open pull request from branch `head` (of this repository) into `base`, created or brought up to
        date (title, body). Returns it and whether it was created."""
        op = f"create or update the pull request {head} -> {base} in {self.repo_name}"
        with self._call(op):
            existing = self._open_pull_for(head, base)
            if existing is None:
                try:
                    pr = self._repo.create_pull(base=base, head=head, title=title, body=body, draft=draft)
                    return pull_request_info(pr), True
                except GithubException as e:
                    if e.status != 422 or "already exists" not in str(e.data):
                        raise
                    existing = self._open_pull_for(head, base)  # created concurrently: update that one
                    if existing is None:
                        raise
            if existing.title != title or (existing.body or "") != body:
                existing.edit(title=title, body=body)
            return pull_request_info(existing), False

    def _open_pull_for(self, head: str, base: str):
        # the head filter needs the owner:branch form; GitHub ignores a bare branch name
        return next(iter(self._repo.get_pulls(state="open", head=f"{self.owner}:{head}", base=base)), None)

    # ------------------------------------------------------------------ comments

    def _find_comment(self, number: int, key: str):
        for comment in self._repo.get_issue(number).get_comments():
            if _has_marker(key, comment.body) and self._ours(comment):
                return comment
        return None

    def upsert_comment(self, number: int, body: str, *, key: str, comment_id: int | None = None) -> CommentInfo:
        """The one comment on issue/pull request `number` marked with `key` and written by this client's identity,
        created or updated in place (a marked comment by anyone else is left alone).

        With `comment_id` (from an earlier call) the comment is updated directly, without listing comments;
        if it is gone, it is looked for and created as usual. The body (with its marker line) must fit GitHub's
        65,536 characters (see `body_budget`); GitHub's 422 comes back as a GitHubError otherwise."""
        full = _with_marker(key, body)
        with self._call(f"upsert the comment {marker(key)} on {self.repo_name}#{number}"):
            if comment_id is not None:
                try:
                    _, data = self._gh.requester.requestJsonAndCheck(
                        "PATCH", f"/repos/{self.repo_name}/issues/comments/{int(comment_id)}", input={"body": full})
                    return CommentInfo(data["id"], data["body"], data["html_url"], updated=True)
                except GithubException as e:
                    if e.status != 404:
                        raise
            existing = self._find_comment(number, key)
            if existing is None:
                c = self._repo.get_issue(number).create_comment(full)
                return CommentInfo(c.id, c.body, c.html_url, created=True)
            if existing.body == full:
                return CommentInfo(existing.id, existing.body, existing.html_url)
            existing.edit(full)
            return CommentInfo(existing.id, full, existing.html_url, updated=True)

    # ------------------------------------------------------------------ statuses

    def set_status(self, sha: str, state: str, *, context: str = STATUS_CONTEXT, description: str | None = None,
                   target_url: str | None = None) -> StatusInfo:
        """Set the commit status `context` of `sha` (state: pending, success, failure or error). A description
        longer than GitHub's 140 characters is shortened."""
        if state not in ("pending", "success", "failure", "error"):
            raise ValueError(f"commit status state must be pending, success, failure or error, not {state!r}")
        if description is not None and len(description) > STATUS_DESCRIPTION_LIMIT:
            description = description[:STATUS_DESCRIPTION_LIMIT - 1] + "…"
        kwargs = {"context": context}
        if description is not None:
            kwargs["description"] = description
        if target_url:
            kwargs["target_url"] = target_url
        with self._call(f"set status {context}={state} on {sha} in {self.repo_name}"):
            s = self._repo.get_commit(sha).create_status(state, **kwargs)
            return StatusInfo(s.context, s.state, s.description, s.target_url)

    # ------------------------------------------------------------------ issues

    def find_issue(self, key: str, *, labels: tuple[str, ...] = (ISSUE_LABEL,),
                   state: str = "open") -> IssueInfo | None:
        with self._call(f"find the issue {marker(key)} in {self.repo_name}"):
            found = self._find_issue(key, labels, state)
            return issue_info(found) if found else None

    def _find_issue(self, key: str, labels: tuple[str, ...], state: str):
        for issue in self._repo.get_issues(state=state, sort="created", direction="asc",
                                           labels=list(labels) if labels else NotSet):
            # the issues list holds pull requests too; their html_url names them (reading `pull_request` of a
            # plain issue would make PyGithub fetch it again)
            if "/pull/" not in (issue.html_url or "") and _has_marker(key, issue.body) and self._ours(issue):
                return issue
        return None

    def upsert_issue(self, key: str, title: str, body: str, *,
                     labels: tuple[str, ...] = (ISSUE_LABEL,)) -> IssueInfo:
        """The one open issue marked with `key` and opened by this client's identity, created or brought up to date
        (title, body, labels). Issues are looked for among open issues carrying `labels`."""
        full = _with_marker(key, body)
        with self._call(f"open or update the issue {marker(key)} in {self.repo_name}"):
            existing = self._find_issue(key, labels, "open")
            if existing is None:
                issue = self._repo.create_issue(title=title, body=full, labels=list(labels))
                return issue_info(issue, created=True)
            current_labels = {label.name for label in existing.labels}
            if existing.title == title and existing.body == full and set(labels) <= current_labels:
                return issue_info(existing)
            existing.edit(title=title, body=full, labels=sorted(current_labels | set(labels)))
            return issue_info(existing, updated=True)

    def close_issue(self, key: str, *, comment: str | None = None,
                    labels: tuple[str, ...] = (ISSUE_LABEL,)) -> IssueInfo | None:
        """Close the open issue marked with `key` (after adding `comment`, if given). None when there is none."""
        with self._call(f"close the issue {marker(key)} in {self.repo_name}"):
            existing = self._find_issue(key, labels, "open")
            if existing is None:
                return None
            if comment:
                existing.create_comment(comment)
            existing.edit(state="closed", state_reason="completed")
            return issue_info(existing, updated=True)

    # ------------------------------------------------------------------ branches

    def branch_sha(self, branch: str) -> str | None:
        """The head sha of `branch`, or None when there is no such branch."""
        with self._call(f"read branch {branch} of {self.repo_name}"):
            try:
                return self._repo.get_branch(branch).commit.sha
            except GithubException as e:
                if e.status == 404:
                    return None
                raise


def _message(e: GithubException) -> str:
    if isinstance(e.data, dict) and e.data.get("message"):
        return str(e.data["message"])
    return e.message or str(e.data or "") or f"HTTP {e.status}"


def _load_private_key(value: str) -> str:
    """A PEM key given inline (possibly with literal \\n, as environment variables often carry it) or as a path."""
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    if os.path.isfile(value):
        with open(value) as f:
            return f.read()
    raise ValueError("the GitHub App private key is neither a PEM text nor a readable file")
