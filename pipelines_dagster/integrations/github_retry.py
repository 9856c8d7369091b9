"""How the GitHub client retries (inside PyGithub's HTTP layer, a urllib3 `Retry`): 5xx answers with exponential
backoff; rate-limit answers (403 or 429, as GitHub documents both) after `Retry-After` or, for the primary limit,
until `X-RateLimit-Reset`; never a wait longer than `RetryPolicy.max_rate_limit_wait` (the call fails at once)."""

import json
import time
from dataclasses import dataclass

from github.GithubException import RateLimitExceededExceedsMaxWait
from github.GithubRetry import GithubRetry
from github.Requester import Requester
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. `total` attempts after the first; server errors back off `backoff_factor * 2**n` seconds
    (at most `backoff_max`); a secondary rate limit without Retry-After waits `secondary_rate_wait`; no single
    rate-limit wait may exceed `max_rate_limit_wait` (the call fails instead)."""

    total: int = 5
    backoff_factor: float = 1.0
    backoff_max: float = 60.0
    secondary_rate_wait: float = 60.0
    max_rate_limit_wait: float = 900.0



class RateLimitAwareRetry(GithubRetry):
    """PyGithub's GithubRetry, extended to what GitHub documents: rate limits come as 403 *or* 429, the primary limit
    is recognised by ``X-RateLimit-Remaining: 0`` (not only by its message), ``Retry-After`` is honoured on both,
    and idempotent PATCH updates are retried like GET/POST."""

    def __init__(self, **kwargs):
        kwargs.setdefault("status_forcelist", list(range(500, 600)) + [429])
        kwargs.setdefault("allowed_methods", Retry.DEFAULT_ALLOWED_METHODS | {"GET", "POST", "PATCH"})
        super().__init__(**kwargs)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is None or response.status not in (403, 429):
            return super().increment(method, url, response, error, _pool, _stacktrace)
        wait, content = self._rate_limit_wait(response, url)
        headers = dict(response.headers)
        if wait is None:  # a 403 that is no rate limit (permissions, ...): not retried
            raise Requester.createException(response.status, headers, content)
        if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
            raise RateLimitExceededExceedsMaxWait(response.status, content or {}, headers, wait=wait)
        try:
            retry = Retry.increment(self, method, url, response, error, _pool, _stacktrace)
        except MaxRetryError as exhausted:
            if content is None:
                raise  # urllib3 hands the unread response back to PyGithub, which raises from it
            raise Requester.createException(response.status, headers, content) from exhausted
        retry.get_backoff_time = lambda: wait  # slept by urllib3 (it sleeps Retry-After itself when present)
        return retry

    def _rate_limit_wait(self, response, url) -> tuple[float | None, dict | None]:
        h = response.headers
        if h.get("Retry-After"):
            try:
                return self.parse_retry_after(h["Retry-After"]), None
            except Exception:
                pass
        reset = h.get("X-RateLimit-Reset")
        if h.get("X-RateLimit-Remaining") == "0" and reset and reset.isdigit():
            return max(0.0, int(reset) - time.time()) + 1, None
        content = _json_content(self.get_content(response, url))
        message = content.get("message") or ""
        if Requester.isPrimaryRateLimitError(message):
            return (max(0.0, int(reset) - time.time()) + 1 if reset and reset.isdigit()
                    else self.secondary_rate_wait), content
        if Requester.isSecondaryRateLimitError(message) or response.status == 429:
            return self.secondary_rate_wait, content
        return None, content



def _json_content(raw: bytes) -> dict:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw.decode(errors="replace")}
    return data if isinstance(data, dict) else {"data": data}
