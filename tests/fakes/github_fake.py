"""A stateful HTTP fake of the GitHub REST endpoints pipelines-dagster uses.

It listens on 127.0.0.1 (a free port) from a background thread, so PyGithub talks to it over real HTTP through
``base_url`` / ``GITHUB_API_URL``. It follows GitHub's documented requests and responses where the pipeline can
notice the difference:

- objects carry the fields PyGithub reads (``id``, ``node_id``, ``number``, ``url``, ``html_url``, ``user``,
  ISO 8601 times, ...) and their ``url`` fields point back at this server, so PyGithub can follow them;
- list endpoints paginate with ``per_page`` (default 30, at most 100) and ``page`` and send ``Link`` headers;
  list items are the "simple" shapes (a listed pull request has no ``merged`` field, as on GitHub);
- issues and pull requests share one number sequence per repository, and the issues list includes pull
  requests (with a ``pull_request`` key);
- ``GET /repos/{o}/{r}/pulls?head=`` filters only with the ``owner:branch`` form; a bare branch name is ignored,
  as GitHub silently does;
- validation failures are 422 ``{"message": "Validation Failed", "errors": [...]}`` (a pull request that already
  exists for head/base, bodies over 65,536 characters, status descriptions over 140 characters, unknown states);
- unknown objects are 404 ``{"message": "Not Found", ...}``; a wrong token is 401 ``Bad credentials``;
- every response carries the primary rate-limit headers (``X-RateLimit-Limit/Remaining/Reset/Used/Resource``),
  counted per identity; a GET answers with an ``ETag``, and the same GET with it in ``If-None-Match`` gets ``304
  Not Modified`` without a body while nothing it says changed, and is not counted; GitHub App installation
  tokens are issued for a JWT signed with the app's key;
- ``GET /app`` ("Get the authenticated app") answers a JWT only, with the app (its ``slug``, ...); an installation
  token's ``GET /user`` is refused with 403, and what it writes carries the login ``<slug>[bot]``.

Tests control it directly: seed repositories, branches, commits, pull requests and issues; inject failures
(5xx, secondary rate limits with ``Retry-After``, an exhausted primary rate limit, 429); read the request log
(method, path, status) to count reads and writes; read back what was written.
"""

import base64
import hashlib
import itertools
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_TOKEN = "test-token"
DEFAULT_LOGIN = "pipelines-bot"
BODY_LIMIT = 65536
TITLE_LIMIT = 256
STATUS_DESCRIPTION_LIMIT = 140
STATUSES_PER_CONTEXT_LIMIT = 1000
RATE_LIMIT = 5000
DOCS = "https://docs.github.com/rest"
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)

STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
               401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
               422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def fake_sha(*parts) -> str:
    return hashlib.sha1(":".join(str(p) for p in parts).encode()).hexdigest()


class ApiError(Exception):
    """Raised by a route handler: becomes a GitHub-shaped error response."""

    def __init__(self, status: int, message: str, errors: list | None = None, doc: str = DOCS,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.errors, self.doc, self.headers = status, message, errors, doc, headers or {}

    def body(self) -> dict:
        out = {"message": self.message}
        if self.errors:
            out["errors"] = self.errors
        out["documentation_url"] = self.doc
        out["status"] = str(self.status)
        return out


def not_found(doc: str = DOCS) -> ApiError:
    return ApiError(404, "Not Found", doc=doc)


def validation_failed(resource: str, field_: str | None, code: str, message: str | None = None,
                      doc: str = DOCS) -> ApiError:
    err = {"resource": resource, "code": code}
    if field_ is not None:
        err["field"] = field_
    if message is not None:
        err["message"] = message
    return ApiError(422, "Validation Failed", [err], doc=doc)


@dataclass
class Identity:
    login: str
    id: int
    type: str = "User"  # "User" or "Bot"
    installation_id: int | None = None


@dataclass
class RateBucket:
    limit: int = RATE_LIMIT
    used: int = 0
    reset: int = 0


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    fork_of: str | None = None
    branches: dict = field(default_factory=dict)          # name -> sha
    commits: set = field(default_factory=set)             # every sha known in this repository
    default_history: set = field(default_factory=set)     # shas that are (or were) on the default branch
    next_number: int = 1
    pulls: dict = field(default_factory=dict)             # number -> PullRequest
    issues: dict = field(default_factory=dict)            # number -> Issue
    labels: dict = field(default_factory=dict)            # lower name -> label dict
    statuses: list = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class PullRequest:
    id: int
    number: int
    title: str
    body: str | None
    user: Identity
    head_repo: str | None   # full name; None when the fork was deleted
    head_owner: str
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    state: str = "open"
    draft: bool = False
    merged_at: float | None = None
    closed_at: float | None = None
    merge_commit_sha: str | None = None
    maintainer_can_modify: bool = False
    commits: list = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: Identity
    state: str = "open"
    state_reason: str | None = None
    labels: list = field(default_factory=list)  # label dicts
    assignees: list = field(default_factory=list)
    comments: list = field(default_factory=list)  # Comment
    closed_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    is_pull: bool = False


@dataclass
class Comment:
    id: int
    issue_number: int
    body: str
    user: Identity
    created_at: float
    updated_at: float


@dataclass
class Status:
    id: int
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: Identity
    created_at: float


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int
    injected: bool = False

    @property
    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")


@dataclass
class Injection:
    pattern: re.Pattern
    method: str | None
    remaining: int
    status: int
    body: dict | None
    headers: dict


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid delayed-ACK stalls
    server_version = "GitHub.com"
    sys_version = ""
    timeout = 30

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    def _handle(self):
        self.server.fake._serve(self)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _handle


class GitHubFake:
    """The fake GitHub API. Use as a context manager, or call start() and stop()."""

    def __init__(self, token: str = DEFAULT_TOKEN, login: str = DEFAULT_LOGIN, *, api_prefix: str = "",
                 html_base: str = "https://github.com", strict_commits: bool = True):
        self.api_prefix = api_prefix.rstrip("/")
        self.html_base = html_base.rstrip("/")
        self.strict_commits = strict_commits
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._user_ids = itertools.count(1)
        self._users: dict[str, Identity] = {}
        self._tokens: dict[str, Identity] = {}
        self._apps: dict[str, dict] = {}
        self._installations: dict[int, dict] = {}
        self._repos: dict[str, Repo] = {}
        self._buckets: dict[str, RateBucket] = {}
        self._injections: list[Injection] = []
        self._log: list[LoggedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_token(token, login)
        self.token, self.login = token, login

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "GitHubFake":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="github-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> "GitHubFake":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The API base URL (what GITHUB_API_URL / PyGithub's base_url should be)."""
        return f"http://127.0.0.1:{self.port}{self.api_prefix}"

    # ------------------------------------------------------------------ seeding

    def user(self, login: str, type_: str = "User") -> Identity:
        with self._lock:
            if login.lower() not in self._users:
                self._users[login.lower()] = Identity(login, next(self._user_ids), type_)
            return self._users[login.lower()]

    def add_token(self, token: str, login: str) -> Identity:
        with self._lock:
            ident = self.user(login)
            self._tokens[token] = ident
            return ident

    def add_app(self, app_id: int | str, public_key_pem: str | bytes, installation_id: int,
                slug: str = "pipelines-dagster", *, name: str | None = None, owner: str = "acme") -> None:
        """Register a GitHub App (its public key, to check JWT signatures) and one installation of it."""
        with self._lock:
            self._apps[str(app_id)] = {"public_key": public_key_pem, "slug": slug, "name": name or slug,
                                       "owner": owner, "created_at": time.time()}
            self._installations[int(installation_id)] = {"app_id": str(app_id), "slug": slug}

    def add_repo(self, full_name: str, default_branch: str = "main", *, fork_of: str | None = None,
                 default_sha: str | None = None) -> Repo:
        owner, name = full_name.split("/")
        with self._lock:
            self.user(owner)
            repo = Repo(next(self._ids), owner, name, default_branch, fork_of=fork_of)
            self._repos[full_name.lower()] = repo
            self.set_branch(full_name, default_branch, default_sha or fake_sha(full_name, default_branch, 0))
            return repo

    def repo(self, full_name: str) -> Repo:
        return self._repos[full_name.lower()]

    def delete_repo(self, full_name: str) -> None:
        """Delete a repository (a fork, say): pull requests from it then have `head.repo: null`, as on GitHub."""
        with self._lock:
            self._repos.pop(full_name.lower())

    def add_commit(self, repo: str, sha: str) -> None:
        with self._lock:
            self.repo(repo).commits.add(sha)

    def set_branch(self, repo: str, branch: str, sha: str) -> None:
        """Create or move a branch (a push). Open pull requests from or into it follow, as on GitHub."""
        now = time.time()
        with self._lock:
            r = self.repo(repo)
            r.branches[branch] = sha
            r.commits.add(sha)
            if branch == r.default_branch:
                r.default_history.add(sha)
            for target in self._repos.values():
                for pr in target.pulls.values():
                    if pr.state != "open":
                        continue
                    if pr.head_repo and pr.head_repo.lower() == r.full_name.lower() and pr.head_ref == branch:
                        pr.head_sha, pr.updated_at = sha, now
                        pr.commits.append(sha)
                        target.commits.add(sha)
                    if target is r and pr.base_ref == branch:
                        pr.base_sha = sha

    def delete_branch(self, repo: str, branch: str) -> None:
        with self._lock:
            self.repo(repo).branches.pop(branch, None)

    def add_pull_request(self, repo: str, head: str, base: str | None = None, *, title: str = "A change",
                         body: str | None = None, user: str | None = None, head_repo: str | None = None,
                         head_sha: str | None = None, draft: bool = False, state: str = "open") -> int:
        """Seed a pull request from `head` (a branch of `head_repo`, default the same repository) into `base`."""
        now = time.time()
        with self._lock:
            r = self.repo(repo)
            base = base or r.default_branch
            head_repo = head_repo or r.full_name
            hr = self.repo(head_repo)
            if head_sha is None:
                head_sha = hr.branches.get(head) or fake_sha(head_repo, head, now)
            if hr.branches.get(head) != head_sha:
                self.set_branch(head_repo, head, head_sha)
            if base not in r.branches:
                raise KeyError(f"base branch {base!r} not in {repo}")
            r.commits.add(head_sha)
            number = self._next_number(r)
            ident = self.user(user or hr.owner)
            pr = PullRequest(next(self._ids), number, title, body, ident, hr.full_name, hr.owner, head, head_sha,
                             base, r.branches[base], state=state, draft=draft, commits=[head_sha],
                             created_at=now, updated_at=now)
            if state == "closed":
                pr.closed_at = now
            r.pulls[number] = pr
            r.issues[number] = Issue(next(self._ids), number, title, body, ident, state=state, created_at=now,
                                     updated_at=now, is_pull=True, closed_at=pr.closed_at)
            return number

    def update_pull_request_head(self, repo: str, number: int, sha: str) -> None:
        """A push to the pull request's head branch (GitHub's `synchronize`)."""
        with self._lock:
            pr = self.repo(repo).pulls[number]
            self.set_branch(pr.head_repo, pr.head_ref, sha)

    def merge_pull_request(self, repo: str, number: int, merge_commit_sha: str | None = None) -> str:
        """Merge a pull request: closes it, records the merge commit and moves the base branch to it."""
        now = time.time()
        with self._lock:
            r = self.repo(repo)
            pr = r.pulls[number]
            sha = merge_commit_sha or fake_sha(repo, number, "merge", now)
            pr.state, pr.merged_at, pr.closed_at, pr.merge_commit_sha, pr.updated_at = "closed", now, now, sha, now
            issue = r.issues[number]
            issue.state, issue.closed_at, issue.updated_at = "closed", now, now
            self.set_branch(repo, pr.base_ref, sha)
            if pr.base_ref == r.default_branch:
                r.default_history.update(pr.commits)
            return sha

    def close_pull_request(self, repo: str, number: int) -> None:
        now = time.time()
        with self._lock:
            r = self.repo(repo)
            r.pulls[number].state, r.pulls[number].closed_at = "closed", now
            r.issues[number].state, r.issues[number].closed_at = "closed", now

    def add_issue(self, repo: str, title: str, body: str | None = None, *, user: str | None = None,
                  labels: tuple = (), state: str = "open") -> int:
        now = time.time()
        with self._lock:
            r = self.repo(repo)
            number = self._next_number(r)
            r.issues[number] = Issue(next(self._ids), number, title, body, self.user(user or self.login),
                                     state=state, labels=[self._label(r, n) for n in labels], created_at=now,
                                     updated_at=now, closed_at=now if state == "closed" else None)
            return number

    def add_comment(self, repo: str, number: int, body: str, *, user: str | None = None) -> int:
        now = time.time()
        with self._lock:
            issue = self.repo(repo).issues[number]
            c = Comment(next(self._ids), number, body, self.user(user or self.login), now, now)
            issue.comments.append(c)
            return c.id

    # ------------------------------------------------------------------ failure injection

    def inject(self, path: str, status: int, *, times: int = 1, method: str | None = None,
               body: dict | None = None, headers: dict | None = None) -> None:
        """The next `times` requests whose path matches the regex `path` (and `method`) get this response,
        without reaching the fake's state (as when a proxy or the rate limiter answers)."""
        with self._lock:
            self._injections.append(Injection(re.compile(path), method and method.upper(), times, status,
                                              body, dict(headers or {})))

    def fail(self, path: str = ".*", *, status: int = 502, times: int = 1, method: str | None = None) -> None:
        """Server errors (502 by default) for the next `times` matching requests."""
        message = {500: "Server Error", 502: "Server Error", 503: "Service Unavailable"}.get(status, "Server Error")
        self.inject(path, status, times=times, method=method, body={"message": message})

    def secondary_rate_limit(self, path: str = ".*", *, retry_after: int | None = 1, times: int = 1,
                             status: int = 403, method: str | None = None) -> None:
        """GitHub's secondary rate limit: 403 (or 429) with the documented message and a Retry-After header."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"message": SECONDARY_RATE_LIMIT_MESSAGE.format(request_id="0000:0000:0000000:0000000:00000000"),
                "documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
                                     "#about-secondary-rate-limits"}
        self.inject(path, status, times=times, method=method, body=body, headers=headers)

    def too_many_requests(self, path: str = ".*", *, retry_after: int | None = 1, times: int = 1,
                          method: str | None = None) -> None:
        """A 429 (GitHub answers 403 or 429 for rate limits), with Retry-After."""
        self.secondary_rate_limit(path, retry_after=retry_after, times=times, status=429, method=method)

    def exhaust_rate_limit(self, reset_in: float = 1, *, login: str | None = None, status: int = 403) -> int:
        """Use up the primary rate limit of `login` (default: every identity) until `reset_in` seconds from now.

        Until then every request gets `status` (403 or 429), ``X-RateLimit-Remaining: 0`` and the reset time, as
        GitHub does; afterwards the window restarts. Returns the reset time (UTC epoch seconds)."""
        reset = math.ceil(time.time() + reset_in)
        with self._lock:
            self._exhausted_status = status
            logins = [login] if login else [i.login for i in self._users.values()]
            for name in logins:
                bucket = self._bucket(name)
                bucket.used, bucket.reset = bucket.limit, reset
        return reset

    _exhausted_status = 403

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()

    # ------------------------------------------------------------------ request log and read-back

    @property
    def log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, filtered by method and by a regex searched in the path."""
        return [r for r in self.log
                if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.requests(method, path))

    def writes(self) -> list[LoggedRequest]:
        return [r for r in self.log if r.is_write]

    def comments(self, repo: str, number: int) -> list[dict]:
        with self._lock:
            r = self.repo(repo)
            return [self._comment_json(r, c) for c in r.issues[number].comments]

    def statuses(self, repo: str, sha: str) -> list[dict]:
        with self._lock:
            r = self.repo(repo)
            return [self._status_json(r, s) for s in r.statuses if s.sha == sha]

    def pull(self, repo: str, number: int) -> dict:
        with self._lock:
            r = self.repo(repo)
            return self._pull_json(r, r.pulls[number], full=True)

    def pulls(self, repo: str) -> list[dict]:
        with self._lock:
            r = self.repo(repo)
            return [self._pull_json(r, p, full=True) for p in r.pulls.values()]

    def issue(self, repo: str, number: int) -> dict:
        with self._lock:
            r = self.repo(repo)
            return self._issue_json(r, r.issues[number])

    def issues(self, repo: str, *, include_pulls: bool = False) -> list[dict]:
        with self._lock:
            r = self.repo(repo)
            return [self._issue_json(r, i) for i in r.issues.values() if include_pulls or not i.is_pull]

    # ------------------------------------------------------------------ HTTP plumbing

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path)
        if self.api_prefix and path.startswith(self.api_prefix):
            path = path[len(self.api_prefix):]
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        status, body, headers, injected = self._respond(h.command, path, query, raw, h.headers)
        with self._lock:
            self._log.append(LoggedRequest(h.command, path, split.query, status, injected))
        payload = b"" if body is None else json.dumps(body).encode()
        h.send_response(status, STATUS_TEXT.get(status))
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        h.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        h.send_header("X-GitHub-Request-Id", secrets.token_hex(8).upper())
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.end_headers()
        if payload and h.command != "HEAD":
            h.wfile.write(payload)

    def _respond(self, method, path, query, raw, req_headers):
        headers: dict = {}
        with self._lock:
            if not req_headers.get("User-Agent"):
                return 403, {"message": "Request forbidden by administrative rules. Please make sure your request "
                                        "has a User-Agent header (https://docs.github.com/rest/overview/resources-"
                                        "in-the-rest-api#user-agent-required)."}, headers, False
            try:
                ident = self._authenticate(method, path, req_headers)
            except ApiError as e:
                return e.status, e.body(), e.headers, False
            bucket = self._bucket(ident.login) if ident else None
            now = time.time()
            if bucket is not None:
                if now >= bucket.reset:
                    bucket.used, bucket.reset = 0, int(now) + 3600
                headers.update(self._rate_headers(bucket))
            injection = self._take_injection(method, path)
            if injection is not None:
                h = dict(headers)
                h.update(injection.headers)
                return injection.status, injection.body, h, True
            if bucket is not None and path != "/rate_limit":
                if bucket.used >= bucket.limit:
                    body = {"message": f"API rate limit exceeded for user ID {ident.id}. If you reach out to GitHub "
                                       "Support for help, please include the request ID 0000:0000:0000000.",
                            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}
                    return self._exhausted_status, body, headers, False
                bucket.used += 1
                headers.update(self._rate_headers(bucket))
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                return 400, {"message": "Problems parsing JSON", "documentation_url": DOCS, "status": "400"}, \
                    headers, False
            try:
                for route_method, pattern, handler in self._routes():
                    m = pattern.fullmatch(path)
                    if m and route_method == method:
                        status, body, extra = handler(self, ident, query, data, **m.groupdict())
                        headers.update(extra or {})
                        if method == "GET" and status == 200:
                            return self._conditional(ident, bucket, body, headers, req_headers)
                        return status, body, headers, False
                return 404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, headers, False
            except ApiError as e:
                headers.update(e.headers)
                return e.status, e.body(), headers, False

    def _conditional(self, ident, bucket, body, headers, req_headers):
        """GitHub's conditional requests: a GET's answer has an ETag (of what it says, for whom); asked again with
        it in If-None-Match, an unchanged answer is a 304 without a body, not counted against the rate limit."""
        seen = json.dumps([ident.login if ident else None, body, headers.get("Link")], sort_keys=True)
        etag = f'W/"{hashlib.sha256(seen.encode()).hexdigest()[:40]}"'
        headers["ETag"] = etag
        asked = [t.strip() for t in (req_headers.get("If-None-Match") or "").split(",")]
        if etag not in asked and etag.removeprefix("W/") not in asked:
            return 200, body, headers, False
        if bucket is not None:
            bucket.used -= 1
            headers.update(self._rate_headers(bucket))
        return 304, None, headers, False

    def counted(self, login: str | None = None) -> int:
        """Requests counted against `login`'s primary rate limit (the token's user by default) in this hour."""
        with self._lock:
            return self._bucket(login or self.login).used

    def _take_injection(self, method: str, path: str) -> Injection | None:
        for inj in self._injections:
            if inj.remaining > 0 and (inj.method is None or inj.method == method) and inj.pattern.search(path):
                inj.remaining -= 1
                if inj.remaining == 0:
                    self._injections.remove(inj)
                return inj
        return None

    def _authenticate(self, method: str, path: str, req_headers) -> Identity | None:
        auth = req_headers.get("Authorization")
        if not auth:
            if path == "/rate_limit":
                return None
            raise ApiError(401, "Requires authentication")
        scheme, _, credential = auth.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and credential.count(".") == 2:
            if not path.startswith("/app"):
                raise ApiError(401, "A JSON web token could not be decoded")
            return self._authenticate_jwt(credential)
        if scheme.lower() not in ("token", "bearer") or credential not in self._tokens:
            raise ApiError(401, "Bad credentials")
        ident = self._tokens[credential]
        expiry = getattr(ident, "_expires", None)
        if expiry is not None and time.time() > expiry:
            raise ApiError(401, "Bad credentials")
        return ident

    def _authenticate_jwt(self, token: str) -> Identity:
        import jwt  # PyJWT, a PyGithub dependency

        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            app = self._apps.get(str(claims.get("iss")))
            if app is None:
                raise ApiError(401, "Integration not found")
            claims = jwt.decode(token, app["public_key"], algorithms=["RS256"], leeway=60)
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "'Expiration time' claim ('exp') must be a numeric value representing the future "
                                "time at which the assertion expires") from None
        except jwt.PyJWTError:
            raise ApiError(401, "A JSON web token could not be decoded") from None
        if int(claims.get("exp", 0)) - int(claims.get("iat", 0)) > 660:
            raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
        ident = self.user(f"{app['slug']}", "Bot")
        ident.app_id = str(claims["iss"])
        return ident

    def _bucket(self, login: str) -> RateBucket:
        bucket = self._buckets.get(login.lower())
        if bucket is None:
            bucket = self._buckets[login.lower()] = RateBucket(reset=int(time.time()) + 3600)
        return bucket

    @staticmethod
    def _rate_headers(bucket: RateBucket) -> dict:
        return {"X-RateLimit-Limit": bucket.limit, "X-RateLimit-Remaining": max(0, bucket.limit - bucket.used),
                "X-RateLimit-Reset": bucket.reset, "X-RateLimit-Used": bucket.used, "X-RateLimit-Resource": "core"}

    # ------------------------------------------------------------------ JSON shapes

    @property
    def _api(self) -> str:
        return self.url

    def _user_json(self, ident: Identity) -> dict:
        return {"login": ident.login, "id": ident.id, "node_id": self._node("U", ident.id),
                "avatar_url": f"https://avatars.githubusercontent.com/u/{ident.id}?v=4", "gravatar_id": "",
                "url": f"{self._api}/users/{ident.login}", "html_url": f"{self.html_base}/{ident.login}",
                "type": ident.type, "site_admin": False}

    @staticmethod
    def _node(prefix: str, id_: int) -> str:
        return f"{prefix}_kw" + base64.b64encode(f"{prefix}{id_}".encode()).decode().rstrip("=")

    def _repo_json(self, r: Repo) -> dict:
        api = f"{self._api}/repos/{r.full_name}"
        return {"id": r.id, "node_id": self._node("R", r.id), "name": r.name, "full_name": r.full_name,
                "owner": self._user_json(self.user(r.owner)), "private": True,
                "html_url": f"{self.html_base}/{r.full_name}", "description": None, "fork": r.fork_of is not None,
                "url": api, "pulls_url": f"{api}/pulls{{/number}}", "issues_url": f"{api}/issues{{/number}}",
                "statuses_url": f"{api}/statuses/{{sha}}", "branches_url": f"{api}/branches{{/branch}}",
                "git_refs_url": f"{api}/git/refs{{/sha}}", "commits_url": f"{api}/commits{{/sha}}",
                "clone_url": f"{self.html_base}/{r.full_name}.git", "default_branch": r.default_branch,
                "visibility": "private", "archived": False, "disabled": False,
                "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
                "pushed_at": "2024-01-01T00:00:00Z"}

    def _label(self, r: Repo, name) -> dict:
        name = name["name"] if isinstance(name, dict) else str(name)
        label = r.labels.get(name.lower())
        if label is None:
            lid = next(self._ids)
            label = r.labels[name.lower()] = {
                "id": lid, "node_id": self._node("LA", lid), "url": f"{self._api}/repos/{r.full_name}/labels/"
                f"{quote(name)}", "name": name, "color": "ededed", "default": False, "description": None}
        return label

    def _pull_json(self, r: Repo, pr: PullRequest, full: bool) -> dict:
        api = f"{self._api}/repos/{r.full_name}"
        head_repo = self._repos.get(pr.head_repo.lower()) if pr.head_repo else None
        issue = r.issues[pr.number]
        out = {
            "url": f"{api}/pulls/{pr.number}", "id": pr.id, "node_id": self._node("PR", pr.id),
            "html_url": f"{self.html_base}/{r.full_name}/pull/{pr.number}",
            "diff_url": f"{self.html_base}/{r.full_name}/pull/{pr.number}.diff",
            "patch_url": f"{self.html_base}/{r.full_name}/pull/{pr.number}.patch",
            "issue_url": f"{api}/issues/{pr.number}", "commits_url": f"{api}/pulls/{pr.number}/commits",
            "review_comments_url": f"{api}/pulls/{pr.number}/comments",
            "comments_url": f"{api}/issues/{pr.number}/comments", "statuses_url": f"{api}/statuses/{pr.head_sha}",
            "number": pr.number, "state": pr.state, "locked": False, "title": pr.title,
            "user": self._user_json(pr.user), "body": pr.body, "labels": list(issue.labels), "milestone": None,
            "active_lock_reason": None, "created_at": iso(pr.created_at), "updated_at": iso(pr.updated_at),
            "closed_at": iso(pr.closed_at), "merged_at": iso(pr.merged_at), "merge_commit_sha": pr.merge_commit_sha,
            "assignee": None, "assignees": [], "requested_reviewers": [], "requested_teams": [],
            "head": {"label": f"{pr.head_owner}:{pr.head_ref}", "ref": pr.head_ref, "sha": pr.head_sha,
                     "user": self._user_json(self.user(pr.head_owner)),
                     "repo": self._repo_json(head_repo) if head_repo else None},
            "base": {"label": f"{r.owner}:{pr.base_ref}", "ref": pr.base_ref, "sha": pr.base_sha,
                     "user": self._user_json(self.user(r.owner)), "repo": self._repo_json(r)},
            "_links": {"self": {"href": f"{api}/pulls/{pr.number}"},
                       "html": {"href": f"{self.html_base}/{r.full_name}/pull/{pr.number}"},
                       "issue": {"href": f"{api}/issues/{pr.number}"},
                       "comments": {"href": f"{api}/issues/{pr.number}/comments"},
                       "statuses": {"href": f"{api}/statuses/{pr.head_sha}"}},
            "author_association": "CONTRIBUTOR", "auto_merge": None, "draft": pr.draft,
        }
        if full:  # the single-object shape ("pull-request"), not the list shape ("pull-request-simple")
            out.update({"merged": pr.merged_at is not None, "mergeable": None if pr.state == "closed" else True,
                        "rebaseable": None, "mergeable_state": "unknown" if pr.state == "closed" else "clean",
                        "merged_by": self._user_json(self.user(self.login)) if pr.merged_at else None,
                        "comments": len(issue.comments), "review_comments": 0,
                        "maintainer_can_modify": pr.maintainer_can_modify, "commits": len(pr.commits),
                        "additions": 1, "deletions": 0, "changed_files": 1})
        return out

    def _issue_json(self, r: Repo, i: Issue) -> dict:
        api = f"{self._api}/repos/{r.full_name}"
        kind = "pull" if i.is_pull else "issues"
        out = {"url": f"{api}/issues/{i.number}", "repository_url": api,
               "labels_url": f"{api}/issues/{i.number}/labels{{/name}}",
               "comments_url": f"{api}/issues/{i.number}/comments", "events_url": f"{api}/issues/{i.number}/events",
               "html_url": f"{self.html_base}/{r.full_name}/{kind}/{i.number}", "id": i.id,
               "node_id": self._node("PR" if i.is_pull else "I", i.id), "number": i.number, "title": i.title,
               "user": self._user_json(i.user), "labels": list(i.labels), "state": i.state,
               "state_reason": i.state_reason, "locked": False, "assignee": i.assignees[0] if i.assignees else None,
               "assignees": list(i.assignees), "milestone": None, "comments": len(i.comments),
               "created_at": iso(i.created_at), "updated_at": iso(i.updated_at), "closed_at": iso(i.closed_at),
               "author_association": "OWNER", "active_lock_reason": None, "body": i.body}
        if i.is_pull:
            pr = r.pulls[i.number]
            out["pull_request"] = {"url": f"{api}/pulls/{i.number}",
                                   "html_url": f"{self.html_base}/{r.full_name}/pull/{i.number}",
                                   "diff_url": f"{self.html_base}/{r.full_name}/pull/{i.number}.diff",
                                   "patch_url": f"{self.html_base}/{r.full_name}/pull/{i.number}.patch",
                                   "merged_at": iso(pr.merged_at)}
            out["draft"] = pr.draft
        return out

    def _comment_json(self, r: Repo, c: Comment) -> dict:
        api = f"{self._api}/repos/{r.full_name}"
        kind = "pull" if r.issues[c.issue_number].is_pull else "issues"
        return {"url": f"{api}/issues/comments/{c.id}",
                "html_url": f"{self.html_base}/{r.full_name}/{kind}/{c.issue_number}#issuecomment-{c.id}",
                "issue_url": f"{api}/issues/{c.issue_number}", "id": c.id, "node_id": self._node("IC", c.id),
                "user": self._user_json(c.user), "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
                "author_association": "NONE", "body": c.body}

    def _status_json(self, r: Repo, s: Status, creator: bool = True) -> dict:
        out = {"url": f"{self._api}/repos/{r.full_name}/statuses/{s.sha}",
               "avatar_url": f"https://avatars.githubusercontent.com/u/{s.creator.id}?v=4", "id": s.id,
               "node_id": self._node("SC", s.id), "state": s.state, "description": s.description,
               "target_url": s.target_url, "context": s.context, "created_at": iso(s.created_at),
               "updated_at": iso(s.created_at)}
        if creator:
            out["creator"] = self._user_json(s.creator)
        return out

    def _commit_json(self, r: Repo, sha: str) -> dict:
        api = f"{self._api}/repos/{r.full_name}"
        return {"sha": sha, "node_id": self._node("C", int(sha[:8], 16)), "url": f"{api}/commits/{sha}",
                "html_url": f"{self.html_base}/{r.full_name}/commit/{sha}",
                "comments_url": f"{api}/commits/{sha}/comments",
                "commit": {"url": f"{api}/git/commits/{sha}", "message": "commit",
                           "author": {"name": "dev", "email": "dev@example.com", "date": "2024-01-01T00:00:00Z"},
                           "committer": {"name": "dev", "email": "dev@example.com", "date": "2024-01-01T00:00:00Z"},
                           "tree": {"sha": fake_sha("tree", sha), "url": f"{api}/git/trees/{fake_sha('tree', sha)}"},
                           "comment_count": 0},
                "author": None, "committer": None, "parents": []}

    # ------------------------------------------------------------------ helpers for routes

    def _next_number(self, r: Repo) -> int:
        n = r.next_number
        r.next_number += 1
        return n

    def _get_repo(self, owner: str, repo: str) -> Repo:
        r = self._repos.get(f"{owner}/{repo}".lower())
        if r is None:
            raise not_found("https://docs.github.com/rest/repos/repos#get-a-repository")
        return r

    def _paginate(self, path: str, query: dict, items: list) -> tuple[list, dict]:
        try:
            per_page = max(1, min(100, int(query.get("per_page") or 30)))
            page = max(1, int(query.get("page") or 1))
        except ValueError:
            raise ApiError(422, "Invalid request.\n\nper_page and page must be integers.") from None
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        if last == 1:
            return chunk, {}

        def link(p: int) -> str:
            q = dict(query)
            q["page"] = str(p)
            return f"<{self.url}{quote(path)}?{urlencode(q)}>"

        rels = []
        if page > 1:
            rels.append(f'{link(page - 1)}; rel="prev"')
        if page < last:
            rels.append(f'{link(page + 1)}; rel="next"')
            rels.append(f'{link(last)}; rel="last"')
        if page > 1:
            rels.append(f'{link(1)}; rel="first"')
        return chunk, {"Link": ", ".join(rels)} if rels else {}

    @staticmethod
    def _sort(items: list, query: dict, keys: dict, default: str = "created", always_desc: bool = False) -> list:
        sort = query.get("sort") or default
        if sort not in keys:
            raise validation_failed("Search", "sort", "invalid")
        direction = query.get("direction") or ("desc" if always_desc or sort == default else "asc")
        if direction not in ("asc", "desc"):
            raise validation_failed("Search", "direction", "invalid")
        return sorted(items, key=keys[sort], reverse=direction == "desc")

    def _check_body(self, resource: str, body, doc: str, field_: str = "body", blank_ok: bool = True) -> None:
        if body is None:
            if not blank_ok:
                raise validation_failed(resource, field_, "missing_field", doc=doc)
            return
        if not isinstance(body, str):
            raise ApiError(422, f"Invalid request.\n\nFor 'properties/{field_}', {json.dumps(body)} is not a string "
                                "or null.", doc=doc)
        if not blank_ok and not body.strip():
            raise validation_failed(resource, field_, "missing_field", doc=doc)
        if len(body) > BODY_LIMIT:
            if resource == "IssueComment":
                raise validation_failed(resource, "data", "unprocessable",
                                        f"Body is too long (maximum is {BODY_LIMIT} characters)", doc=doc)
            raise validation_failed(resource, field_, "custom",
                                    f"{field_} is too long (maximum is {BODY_LIMIT} characters)", doc=doc)

    def _resolve_ref(self, r: Repo, ref: str) -> str | None:
        if ref in r.branches:
            return r.branches[ref]
        if ref.startswith("refs/heads/") and ref[11:] in r.branches:
            return r.branches[ref[11:]]
        if ref in r.commits or not self.strict_commits and re.fullmatch(r"[0-9a-f]{40}", ref):
            return ref
        return None

    def _head_repo_for(self, base: Repo, owner: str, head_repo: str | None) -> Repo | None:
        if head_repo:
            candidate = self._repos.get((head_repo if "/" in head_repo else f"{owner}/{head_repo}").lower())
            return candidate
        if owner.lower() == base.owner.lower():
            return base
        for candidate in self._repos.values():
            if candidate.owner.lower() == owner.lower() and (candidate.fork_of or "").lower() == \
                    base.full_name.lower():
                return candidate
        return None

    # ------------------------------------------------------------------ routes

    def _routes(self):
        return _ROUTES

    def r_rate_limit(self, ident, query, data):
        bucket = self._bucket(ident.login) if ident else RateBucket(limit=60, reset=int(time.time()) + 3600)
        core = {"limit": bucket.limit, "used": bucket.used, "remaining": max(0, bucket.limit - bucket.used),
                "reset": bucket.reset}
        other = {"limit": 30, "used": 0, "remaining": 30, "reset": int(time.time()) + 60}
        return 200, {"resources": {"core": core, "search": other, "graphql": dict(core), "integration_manifest": other,
                                   "code_search": {**other, "limit": 10, "remaining": 10}},
                     "rate": core}, {}

    def r_user(self, ident, query, data):
        if ident.type == "Bot":
            raise ApiError(403, "Resource not accessible by integration",
                           doc="https://docs.github.com/rest/users/users#get-the-authenticated-user")
        return 200, self._user_json(ident), {}

    def r_app(self, ident, query, data):
        """GET /app: the app whose JWT authenticates the request (docs: "Get the authenticated app")."""
        doc = "https://docs.github.com/rest/apps/apps#get-the-authenticated-app"
        if getattr(ident, "app_id", None) is None:  # a user or installation token, not the app's JWT
            raise ApiError(401, "A JSON web token could not be decoded", doc=doc)
        app_id = ident.app_id
        app = self._apps[app_id]
        installations = sum(1 for i in self._installations.values() if i["app_id"] == app_id)
        return 200, {"id": int(app_id), "slug": app["slug"], "client_id": f"Iv1.{fake_sha('client', app_id)[:16]}",
                     "node_id": self._node("A", int(app_id)), "owner": self._user_json(self.user(app["owner"])),
                     "name": app["name"], "description": "", "external_url": f"{self.html_base}/{app['owner']}",
                     "html_url": f"{self.html_base}/apps/{app['slug']}", "created_at": iso(app["created_at"]),
                     "updated_at": iso(app["created_at"]),
                     "permissions": {"contents": "write", "pull_requests": "write", "issues": "write",
                                     "statuses": "write", "metadata": "read"},
                     "events": ["pull_request", "push"], "installations_count": installations}, {}

    def r_access_token(self, ident, query, data, installation_id):
        if getattr(ident, "app_id", None) is None:  # a user or installation token, not the app's JWT
            raise ApiError(401, "A JSON web token could not be decoded")
        inst = self._installations.get(int(installation_id))
        if inst is None or inst["app_id"] != ident.app_id:
            raise not_found("https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app")
        token = "ghs_" + secrets.token_urlsafe(27)[:36]
        bot = Identity(f"{inst['slug']}[bot]", self.user(f"{inst['slug']}[bot]", "Bot").id, "Bot",
                       installation_id=int(installation_id))
        expires = time.time() + 3600
        bot._expires = expires
        self._tokens[token] = bot
        self._users.setdefault(bot.login.lower(), bot)
        permissions = data.get("permissions") or {"contents": "write", "pull_requests": "write",
                                                  "issues": "write", "statuses": "write", "metadata": "read"}
        return 201, {"token": token, "expires_at": iso(expires), "permissions": permissions,
                     "repository_selection": "all"}, {}

    def r_repo(self, ident, query, data, owner, repo):
        return 200, self._repo_json(self._get_repo(owner, repo)), {}

    def r_list_pulls(self, ident, query, data, owner, repo):
        r = self._get_repo(owner, repo)
        state = query.get("state") or "open"
        if state not in ("open", "closed", "all"):
            raise validation_failed("Search", "state", "invalid")
        pulls = [p for p in r.pulls.values() if state == "all" or p.state == state]
        head = query.get("head")
        if head and ":" in head:  # GitHub ignores a head filter without the owner prefix
            head_owner, _, head_ref = head.partition(":")
            pulls = [p for p in pulls if p.head_owner.lower() == head_owner.lower() and p.head_ref == head_ref]
        if query.get("base"):
            pulls = [p for p in pulls if p.base_ref == query["base"]]
        pulls = self._sort(pulls, query, {"created": lambda p: (p.created_at, p.number),
                                          "updated": lambda p: (p.updated_at, p.number),
                                          "popularity": lambda p: (len(r.issues[p.number].comments), p.number),
                                          "long-running": lambda p: (-p.created_at, p.number)})
        chunk, headers = self._paginate(f"/repos/{owner}/{repo}/pulls", query, pulls)
        return 200, [self._pull_json(r, p, full=False) for p in chunk], headers

    def r_get_pull(self, ident, query, data, owner, repo, number):
        r = self._get_repo(owner, repo)
        pr = r.pulls.get(int(number))
        if pr is None:
            raise not_found("https://docs.github.com/rest/pulls/pulls#get-a-pull-request")
        return 200, self._pull_json(r, pr, full=True), {}

    def r_create_pull(self, ident, query, data, owner, repo):
        doc = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"
        r = self._get_repo(owner, repo)
        for key in ("head", "base"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise ApiError(422, f"Invalid request.\n\n\"{key}\" wasn't supplied.", doc=doc)
        if not data.get("title") and not data.get("issue"):
            raise validation_failed("PullRequest", "title", "missing_field", doc=doc)
        title = str(data.get("title"))
        if len(title) > TITLE_LIMIT:
            raise validation_failed("PullRequest", "title", "custom",
                                    f"title is too long (maximum is {TITLE_LIMIT} characters)", doc=doc)
        self._check_body("PullRequest", data.get("body"), doc)
        head_owner, _, head_ref = data["head"].rpartition(":")
        head_owner = head_owner or r.owner
        hr = self._head_repo_for(r, head_owner, data.get("head_repo"))
        if hr is None or head_ref not in hr.branches:
            raise validation_failed("PullRequest", "head", "invalid", doc=doc)
        base = data["base"]
        if base not in r.branches:
            raise validation_failed("PullRequest", "base", "invalid", doc=doc)
        for p in r.pulls.values():
            if p.state == "open" and p.head_repo and p.head_repo.lower() == hr.full_name.lower() \
                    and p.head_ref == head_ref and p.base_ref == base:
                raise validation_failed("PullRequest", None, "custom",
                                        f"A pull request already exists for {hr.owner}:{head_ref}.", doc=doc)
        head_sha = hr.branches[head_ref]
        if head_sha == r.branches[base]:
            raise validation_failed("PullRequest", None, "custom", f"No commits between {base} and {head_ref}",
                                    doc=doc)
        now = time.time()
        number = self._next_number(r)
        pr = PullRequest(next(self._ids), number, title, data.get("body"), ident, hr.full_name, hr.owner, head_ref,
                         head_sha, base, r.branches[base], draft=bool(data.get("draft")),
                         maintainer_can_modify=bool(data.get("maintainer_can_modify")), commits=[head_sha],
                         created_at=now, updated_at=now)
        r.pulls[number] = pr
        r.commits.add(head_sha)
        r.issues[number] = Issue(next(self._ids), number, title, data.get("body"), ident, created_at=now,
                                 updated_at=now, is_pull=True)
        body = self._pull_json(r, pr, full=True)
        return 201, body, {"Location": body["url"]}

    def r_update_pull(self, ident, query, data, owner, repo, number):
        doc = "https://docs.github.com/rest/pulls/pulls#update-a-pull-request"
        r = self._get_repo(owner, repo)
        pr = r.pulls.get(int(number))
        if pr is None:
            raise not_found(doc)
        issue = r.issues[pr.number]
        if "title" in data:
            if not data["title"]:
                raise validation_failed("PullRequest", "title", "missing_field", doc=doc)
            if len(str(data["title"])) > TITLE_LIMIT:
                raise validation_failed("PullRequest", "title", "custom",
                                        f"title is too long (maximum is {TITLE_LIMIT} characters)", doc=doc)
        if "body" in data:
            self._check_body("PullRequest", data["body"], doc)
        if "state" in data and data["state"] not in ("open", "closed"):
            raise validation_failed("PullRequest", "state", "invalid", doc=doc)
        if "base" in data and data["base"] not in r.branches:
            raise validation_failed("PullRequest", "base", "invalid", doc=doc)
        if data.get("state") == "open" and pr.state == "closed":
            if pr.merged_at:
                raise validation_failed("PullRequest", "state", "invalid", "state cannot be changed. The pull "
                                        "request has already been merged.", doc=doc)
            for p in r.pulls.values():
                if p is not pr and p.state == "open" and p.head_repo == pr.head_repo and p.head_ref == pr.head_ref \
                        and p.base_ref == data.get("base", pr.base_ref):
                    raise validation_failed("PullRequest", None, "custom", f"A pull request already exists for "
                                            f"{pr.head_owner}:{pr.head_ref}.", doc=doc)
        now = time.time()
        if "title" in data:
            pr.title = issue.title = str(data["title"])
        if "body" in data:
            pr.body = issue.body = data["body"]
        if "base" in data:
            pr.base_ref, pr.base_sha = data["base"], r.branches[data["base"]]
        if "maintainer_can_modify" in data:
            pr.maintainer_can_modify = bool(data["maintainer_can_modify"])
        if data.get("state") == "closed" and pr.state == "open":
            pr.state = issue.state = "closed"
            pr.closed_at = issue.closed_at = now
        elif data.get("state") == "open" and pr.state == "closed":
            pr.state = issue.state = "open"
            pr.closed_at = issue.closed_at = None
        pr.updated_at = issue.updated_at = now
        return 200, self._pull_json(r, pr, full=True), {}

    def r_commit_pulls(self, ident, query, data, owner, repo, sha):
        r = self._get_repo(owner, repo)
        resolved = self._resolve_ref(r, sha) if re.fullmatch(r"[0-9a-f]{7,40}", sha) else None
        if resolved is None:
            raise validation_failed("Commit", "sha", "invalid", f"No commit found for SHA: {sha}",
                                    doc="https://docs.github.com/rest/commits/commits"
                                        "#list-pull-requests-associated-with-a-commit")
        if resolved in r.default_history:
            pulls = [p for p in r.pulls.values()
                     if p.merged_at and (p.merge_commit_sha == resolved or resolved in p.commits)]
        else:
            pulls = [p for p in r.pulls.values()
                     if p.state == "open" and (p.head_sha == resolved or resolved in p.commits)]
        pulls.sort(key=lambda p: p.number, reverse=True)
        chunk, headers = self._paginate(f"/repos/{owner}/{repo}/commits/{sha}/pulls", query, pulls)
        return 200, [self._pull_json(r, p, full=False) for p in chunk], headers

    def r_get_commit(self, ident, query, data, owner, repo, ref):
        r = self._get_repo(owner, repo)
        sha = self._resolve_ref(r, ref)
        if sha is None:
            raise validation_failed("Commit", "sha", "invalid", f"No commit found for SHA: {ref}",
                                    doc="https://docs.github.com/rest/commits/commits#get-a-commit")
        return 200, self._commit_json(r, sha), {}

    def r_create_status(self, ident, query, data, owner, repo, sha):
        doc = "https://docs.github.com/rest/commits/statuses#create-a-commit-status"
        r = self._get_repo(owner, repo)
        if sha not in r.commits and (self.strict_commits or not re.fullmatch(r"[0-9a-f]{40}", sha)):
            raise ApiError(422, f"No commit found for SHA: {sha}", doc=doc)
        state = data.get("state")
        if state is None:
            raise ApiError(422, "Invalid request.\n\n\"state\" wasn't supplied.", doc=doc)
        if state not in ("error", "failure", "pending", "success"):
            raise ApiError(422, f"Invalid request.\n\nFor 'properties/state', \"{state}\" is not a member of enum.",
                           doc=doc)
        description = data.get("description")
        if description is not None and len(description) > STATUS_DESCRIPTION_LIMIT:
            raise validation_failed("Status", "description", "custom", "description is too long (maximum is "
                                    f"{STATUS_DESCRIPTION_LIMIT} characters)", doc=doc)
        target_url = data.get("target_url")
        if target_url and not re.match(r"https?://", target_url):
            raise validation_failed("Status", "target_url", "custom", "target_url must use http(s) scheme", doc=doc)
        context = data.get("context") or "default"
        same = [s for s in r.statuses if s.sha == sha and s.context.lower() == context.lower()]
        if len(same) >= STATUSES_PER_CONTEXT_LIMIT:
            raise validation_failed("Status", None, "custom", "This SHA and context has reached the maximum number "
                                    "of statuses.", doc=doc)
        r.commits.add(sha)
        s = Status(next(self._ids), sha, state, context, description, target_url or None, ident, time.time())
        r.statuses.append(s)
        body = self._status_json(r, s)
        return 201, body, {"Location": body["url"]}

    def _statuses_for(self, r: Repo, ref: str, doc: str) -> tuple[str, list]:
        sha = self._resolve_ref(r, ref)
        if sha is None:
            raise ApiError(404, f"No commit found for SHA: {ref}", doc=doc)
        return sha, sorted((s for s in r.statuses if s.sha == sha), key=lambda s: s.id, reverse=True)

    def r_combined_status(self, ident, query, data, owner, repo, ref):
        r = self._get_repo(owner, repo)
        sha, statuses = self._statuses_for(r, ref, "https://docs.github.com/rest/commits/statuses"
                                                   "#get-the-combined-status-for-a-specific-reference")
        latest: dict = {}
        for s in statuses:  # newest first: the first per context wins
            latest.setdefault(s.context.lower(), s)
        current = sorted(latest.values(), key=lambda s: s.id)
        states = {s.state for s in current}
        if states & {"error", "failure"}:
            combined = "failure"
        elif not current or "pending" in states:
            combined = "pending"
        else:
            combined = "success"
        chunk, headers = self._paginate(f"/repos/{owner}/{repo}/commits/{ref}/status", query, current)
        api = f"{self._api}/repos/{r.full_name}"
        return 200, {"state": combined, "statuses": [self._status_json(r, s, creator=False) for s in chunk],
                     "sha": sha, "total_count": len(current), "repository": self._repo_json(r),
                     "commit_url": f"{api}/commits/{sha}", "url": f"{api}/commits/{sha}/status"}, headers

    def r_list_statuses(self, ident, query, data, owner, repo, ref):
        r = self._get_repo(owner, repo)
        _, statuses = self._statuses_for(r, ref, "https://docs.github.com/rest/commits/statuses"
                                                 "#list-commit-statuses-for-a-reference")
        chunk, headers = self._paginate(f"/repos/{owner}/{repo}/commits/{ref}/statuses", query, statuses)
        return 200, [self._status_json(r, s) for s in chunk], headers

    def r_list_issues(self, ident, query, data, owner, repo):
        r = self._get_repo(owner, repo)
        state = query.get("state") or "open"
        if state not in ("open", "closed", "all"):
            raise validation_failed("Issue", "state", "invalid")
        issues = [i for i in r.issues.values() if state == "all" or i.state == state]
        if query.get("labels"):
            wanted = {n.strip().lower() for n in query["labels"].split(",") if n.strip()}
            issues = [i for i in issues if wanted <= {lab["name"].lower() for lab in i.labels}]
        if query.get("creator"):
            issues = [i for i in issues if i.user.login.lower() == query["creator"].lower()]
        if query.get("assignee") and query["assignee"] != "*":
            issues = [i for i in issues if query["assignee"].lower() in
                      {a["login"].lower() for a in i.assignees}] if query["assignee"] != "none" else \
                [i for i in issues if not i.assignees]
        if query.get("since"):
            since = parse_iso(query["since"])
            issues = [i for i in issues if i.updated_at >= since]
        issues = self._sort(issues, query, {"created": lambda i: (i.created_at, i.number),
                                            "updated": lambda i: (i.updated_at, i.number),
                                            "comments": lambda i: (len(i.comments), i.number)},
                            always_desc=True)
        chunk, headers = self._paginate(f"/repos/{owner}/{repo}/issues", query, issues)
        return 200, [self._issue_json(r, i) for i in chunk], headers

    def r_create_issue(self, ident, query, data, owner, repo):
        doc = "https://docs.github.com/rest/issues/issues#create-an-issue"
        r = self._get_repo(owner, repo)
        title = data.get("title")
        if title is None or title == "":
            raise validation_failed("Issue", "title", "missing_field", doc=doc)
        if len(str(title)) > TITLE_LIMIT:
            raise validation_failed("Issue", "title", "custom",
                                    f"title is too long (maximum is {TITLE_LIMIT} characters)", doc=doc)
        self._check_body("Issue", data.get("body"), doc)
        now = time.time()
        issue = Issue(next(self._ids), self._next_number(r), str(title), data.get("body"), ident,
                      labels=[self._label(r, n) for n in data.get("labels") or []],
                      assignees=[self._user_json(self.user(a)) for a in data.get("assignees") or []],
                      created_at=now, updated_at=now)
        r.issues[issue.number] = issue
        body = self._issue_json(r, issue)
        return 201, body, {"Location": body["url"]}

    def r_get_issue(self, ident, query, data, owner, repo, number):
        r = self._get_repo(owner, repo)
        issue = r.issues.get(int(number))
        if issue is None:
            raise not_found("https://docs.github.com/rest/issues/issues#get-an-issue")
        return 200, self._issue_json(r, issue), {}

    def r_update_issue(self, ident, query, data, owner, repo, number):
        doc = "https://docs.github.com/rest/issues/issues#update-an-issue"
        r = self._get_repo(owner, repo)
        issue = r.issues.get(int(number))
        if issue is None:
            raise not_found(doc)
        if "title" in data:
            if data["title"] in (None, ""):
                raise validation_failed("Issue", "title", "missing_field", doc=doc)
            if len(str(data["title"])) > TITLE_LIMIT:
                raise validation_failed("Issue", "title", "custom",
                                        f"title is too long (maximum is {TITLE_LIMIT} characters)", doc=doc)
        if "body" in data:
            self._check_body("Issue", data["body"], doc)
        if "state" in data and data["state"] not in ("open", "closed"):
            raise ApiError(422, f"Invalid request.\n\nFor 'properties/state', \"{data['state']}\" is not a member "
                                "of enum.", doc=doc)
        if data.get("state_reason") not in (None, "completed", "not_planned", "reopened", "duplicate"):
            raise validation_failed("Issue", "state_reason", "invalid", doc=doc)
        now = time.time()
        if "title" in data:
            issue.title = str(data["title"])
        if "body" in data:
            issue.body = data["body"]
        if "labels" in data:
            issue.labels = [self._label(r, n) for n in data["labels"] or []]
        if "assignees" in data:
            issue.assignees = [self._user_json(self.user(a)) for a in data["assignees"] or []]
        if data.get("state") == "closed" and issue.state == "open":
            issue.state, issue.closed_at = "closed", now
            issue.state_reason = data.get("state_reason") or "completed"
        elif data.get("state") == "open" and issue.state == "closed":
            issue.state, issue.closed_at, issue.state_reason = "open", None, "reopened"
        if issue.is_pull:
            pr = r.pulls[issue.number]
            pr.title, pr.body, pr.updated_at = issue.title, issue.body, now
            if pr.merged_at is None:
                pr.state, pr.closed_at = issue.state, issue.closed_at
        issue.updated_at = now
        return 200, self._issue_json(r, issue), {}

    def r_list_comments(self, ident, query, data, owner, repo, number):
        r = self._get_repo(owner, repo)
        issue = r.issues.get(int(number))
        if issue is None:
            raise not_found("https://docs.github.com/rest/issues/comments#list-issue-comments")
        comments = sorted(issue.comments, key=lambda c: c.id)
        if query.get("since"):
            since = parse_iso(query["since"])
            comments = [c for c in comments if c.updated_at >= since]
        chunk, headers = self._paginate(f"/repos/{owner}/{repo}/issues/{number}/comments", query, comments)
        return 200, [self._comment_json(r, c) for c in chunk], headers

    def r_create_comment(self, ident, query, data, owner, repo, number):
        doc = "https://docs.github.com/rest/issues/comments#create-an-issue-comment"
        r = self._get_repo(owner, repo)
        issue = r.issues.get(int(number))
        if issue is None:
            raise not_found(doc)
        if "body" not in data:
            raise ApiError(422, "Invalid request.\n\n\"body\" wasn't supplied.", doc=doc)
        self._check_body("IssueComment", data["body"], doc, blank_ok=False)
        now = time.time()
        c = Comment(next(self._ids), issue.number, data["body"], ident, now, now)
        issue.comments.append(c)
        issue.updated_at = now
        body = self._comment_json(r, c)
        return 201, body, {"Location": body["url"]}

    def _find_comment(self, r: Repo, comment_id: str, doc: str) -> Comment:
        for issue in r.issues.values():
            for c in issue.comments:
                if c.id == int(comment_id):
                    return c
        raise not_found(doc)

    def r_get_comment(self, ident, query, data, owner, repo, comment_id):
        r = self._get_repo(owner, repo)
        c = self._find_comment(r, comment_id, "https://docs.github.com/rest/issues/comments#get-an-issue-comment")
        return 200, self._comment_json(r, c), {}

    def r_update_comment(self, ident, query, data, owner, repo, comment_id):
        doc = "https://docs.github.com/rest/issues/comments#update-an-issue-comment"
        r = self._get_repo(owner, repo)
        c = self._find_comment(r, comment_id, doc)
        if "body" not in data:
            raise ApiError(422, "Invalid request.\n\n\"body\" wasn't supplied.", doc=doc)
        self._check_body("IssueComment", data["body"], doc, blank_ok=False)
        c.body, c.updated_at = data["body"], time.time()
        return 200, self._comment_json(r, c), {}

    def r_delete_comment(self, ident, query, data, owner, repo, comment_id):
        r = self._get_repo(owner, repo)
        c = self._find_comment(r, comment_id, "https://docs.github.com/rest/issues/comments"
                                              "#delete-an-issue-comment")
        r.issues[c.issue_number].comments.remove(c)
        return 204, None, {}

    def r_get_branch(self, ident, query, data, owner, repo, branch):
        r = self._get_repo(owner, repo)
        if branch not in r.branches:
            raise ApiError(404, "Branch not found",
                           doc="https://docs.github.com/rest/branches/branches#get-a-branch")
        api = f"{self._api}/repos/{r.full_name}"
        return 200, {"name": branch, "commit": self._commit_json(r, r.branches[branch]),
                     "_links": {"self": f"{api}/branches/{quote(branch)}",
                                "html": f"{self.html_base}/{r.full_name}/tree/{branch}"},
                     "protected": False, "protection_url": f"{api}/branches/{quote(branch)}/protection"}, {}

    def r_get_ref(self, ident, query, data, owner, repo, ref):
        r = self._get_repo(owner, repo)
        if not ref.startswith("heads/") or ref[6:] not in r.branches:
            raise not_found("https://docs.github.com/rest/git/refs#get-a-reference")
        sha = r.branches[ref[6:]]
        api = f"{self._api}/repos/{r.full_name}"
        return 200, {"ref": f"refs/{ref}", "node_id": self._node("REF", int(sha[:8], 16)),
                     "url": f"{api}/git/refs/{quote(ref)}",
                     "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"}}, {}


_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_ROUTES = [(method, re.compile(pattern), handler) for method, pattern, handler in [
    ("GET", r"/rate_limit", GitHubFake.r_rate_limit),
    ("GET", r"/user", GitHubFake.r_user),
    ("GET", r"/app", GitHubFake.r_app),
    ("POST", r"/app/installations/(?P<installation_id>\d+)/access_tokens", GitHubFake.r_access_token),
    ("GET", _REPO, GitHubFake.r_repo),
    ("GET", _REPO + r"/pulls", GitHubFake.r_list_pulls),
    ("POST", _REPO + r"/pulls", GitHubFake.r_create_pull),
    ("GET", _REPO + r"/pulls/(?P<number>\d+)", GitHubFake.r_get_pull),
    ("PATCH", _REPO + r"/pulls/(?P<number>\d+)", GitHubFake.r_update_pull),
    ("GET", _REPO + r"/commits/(?P<sha>[^/]+)/pulls", GitHubFake.r_commit_pulls),
    ("GET", _REPO + r"/commits/(?P<ref>.+)/status", GitHubFake.r_combined_status),
    ("GET", _REPO + r"/commits/(?P<ref>.+)/statuses", GitHubFake.r_list_statuses),
    ("GET", _REPO + r"/commits/(?P<ref>.+)", GitHubFake.r_get_commit),
    ("POST", _REPO + r"/statuses/(?P<sha>[^/]+)", GitHubFake.r_create_status),
    ("GET", _REPO + r"/issues", GitHubFake.r_list_issues),
    ("POST", _REPO + r"/issues", GitHubFake.r_create_issue),
    ("GET", _REPO + r"/issues/comments/(?P<comment_id>\d+)", GitHubFake.r_get_comment),
    ("PATCH", _REPO + r"/issues/comments/(?P<comment_id>\d+)", GitHubFake.r_update_comment),
    ("DELETE", _REPO + r"/issues/comments/(?P<comment_id>\d+)", GitHubFake.r_delete_comment),
    ("GET", _REPO + r"/issues/(?P<number>\d+)", GitHubFake.r_get_issue),
    ("PATCH", _REPO + r"/issues/(?P<number>\d+)", GitHubFake.r_update_issue),
    ("GET", _REPO + r"/issues/(?P<number>\d+)/comments", GitHubFake.r_list_comments),
    ("POST", _REPO + r"/issues/(?P<number>\d+)/comments", GitHubFake.r_create_comment),
    ("GET", _REPO + r"/branches/(?P<branch>.+)", GitHubFake.r_get_branch),
    ("GET", _REPO + r"/git/ref/(?P<ref>.+)", GitHubFake.r_get_ref),
]]


def github_fake_fixture():
    """Body of the `github_fake` pytest fixture: a started fake with one repository, `acme/infrastructure-live`."""
    with GitHubFake() as fake:
        fake.add_repo("acme/infrastructure-live")
        yield fake
