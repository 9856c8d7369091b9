"""A real PostgreSQL server: Debian's binaries (`make system-packages` installs them), a fresh cluster in a temporary
folder, listening on a free 127.0.0.1 port with a password, stopped with its whole process group at the end. As
root it runs as the `postgres` user (postgres refuses to run as root). Used by the production-profile tests and by
`bench/pipeline.py --instance postgres`."""

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from tests.dagsterui import free_port

START_TIMEOUT_S = 30


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def connect(self, dbname: str = "postgres"):
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname, connect_timeout=5)

    def create_database(self, name: str) -> None:
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def server_bin_dir() -> Path:
    """Where initdb and postgres are: Debian keeps them out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, postgres) not found: `make system-packages` installs "
                       "Debian's postgresql package")


def as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextmanager
def postgres_server(durable: bool = False) -> Iterator[Postgres]:
    """A running server, its data thrown away when the context ends. Not `durable` (tests): commits are not
    flushed to disk; `durable` (benchmarks): PostgreSQL's default settings."""
    bin_dir = server_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="pipelines-pg-"))  # not under pytest's root-only tmp folders
    data, password_file, log_path = root / "data", root / "password", root / "postgres.log"
    password = secrets.token_urlsafe(16)
    password_file.write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (root, password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    init = subprocess.run(as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster",
                                          f"--pwfile={password_file}", "--auth-local=trust",
                                          "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"]),
                          capture_output=True, text=True)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    log = log_path.open("w")
    settings = [] if durable else ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    proc = subprocess.Popen(as_server_user([str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                            "-p", str(port), "-k", str(root), "-c", "max_connections=200",
                                            *[arg for s in settings for arg in ("-c", s)]]),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Postgres("127.0.0.1", port, "dagster", password)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{log_path.read_text()}")
            try:
                server.connect().close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT_S}s:\n"
                                       f"{log_path.read_text()}") from None
                time.sleep(0.2)
        yield server
    finally:
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):  # SIGINT: postgres's fast shutdown
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(root, ignore_errors=True)
