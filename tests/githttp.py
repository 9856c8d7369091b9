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
