"""Git remotes over HTTP on 127.0.0.1, for URLs that carry credentials: a bare repository served with git's "dumb"
HTTP protocol (plain files after `git update-server-info`; the server ignores the credentials, as a proxy in front
of a real host would check them), and a port where nothing listens."""

import functools
import socket
import subprocess
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USER, PASSWORD = "alice", "S3cretPassw0rd-4-tests"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


@contextmanager
def served(bare: Path):
    """`http://alice:<password>@127.0.0.1:<port>/<name>.git` for the bare repository `bare` (re-run
    `update_server_info` after each push)."""
    update_server_info(bare)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(bare.parent)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{server.server_address[1]}/{bare.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def update_server_info(bare: Path) -> None:
    subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)


def unreachable_url() -> str:
    """A URL with credentials whose port has nothing listening (git fails at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/live.git"


class _SmartHttp(SimpleHTTPRequestHandler):
    """git's smart HTTP protocol (clone, fetch and push) through `git http-backend`, for requests whose Basic
    credentials are `x-access-token:<token>`; 401 asks for them, as GitHub does. `seen` records the credentials
    of every request."""

    token: str | None = ""  # None: no credentials asked for
    seen: list = []
    slow: frozenset = frozenset()  # objects whose fetch stalls (a huge branch, on a slow link)
    stall_s = 0.0

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        self._git()

    def do_POST(self):
        self._git()

    def _git(self):
        import base64
        import os

        auth = self.headers.get("Authorization", "")
        given = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else None
        self.seen.append(given)
        if self.token is not None and given != f"x-access-token:{self.token}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": self.directory, "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "x",
               "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": self.headers.get("Content-Length", "0")}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if any(sha.encode() in body for sha in self.slow):
            import time

            time.sleep(self.stall_s)
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def served_with_token(bare: Path, token: str):
    """`(url, seen)`: `http://127.0.0.1:<port>/<name>.git`, a remote that clones, fetches and takes pushes only
    with the credentials `x-access-token:<token>`, and the credentials each request carried."""
    seen: list = []
    handler = type("Handler", (_SmartHttp,), {"token": token, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(bare.parent)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{bare.name}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a stalled answer does not hold the test up


@contextmanager
def served_stalling(bare: Path, slow: set[str], stall_s: float):
    """`(url, seen)`: `http://127.0.0.1:<port>/<name>.git` over git's smart protocol, where a fetch that wants any
    of the `slow` objects stalls `stall_s` seconds (as a huge branch does); `seen` grows by one per request."""
    seen: list = []
    handler = type("Handler", (_SmartHttp,), {"token": None, "seen": seen, "slow": frozenset(slow),
                                              "stall_s": stall_s})
    server = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(bare.parent)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{bare.name}", seen
    finally:
        server.shutdown()
        server.server_close()
