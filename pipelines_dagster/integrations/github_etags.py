"""The last answer of each GitHub list page read, for conditional requests (no PyGithub here: the Dagster layer
keeps one per resource without importing the client)."""

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ListPage:
    etag: str
    items: list[dict]
    next_url: str | None


class ETagCache:
    """The last answer of each list page read, by URL: kept by whoever outlives a client (a sensor's resource),
    so that a page asked again unchanged is a 304, which GitHub does not count against the rate limit."""

    def __init__(self, max_pages: int = 1000):
        self._pages: dict[str, ListPage] = {}
        self._lock = threading.Lock()
        self.max_pages = max_pages

    def get(self, key: str) -> ListPage | None:
        with self._lock:
            return self._pages.get(key)

    def put(self, key: str, page: ListPage) -> None:
        with self._lock:
            self._pages.pop(key, None)
            self._pages[key] = page
            while len(self._pages) > self.max_pages:
                self._pages.pop(next(iter(self._pages)))
