"""A real PostgreSQL server for the production-profile tests: Debian's binaries (`make system-packages` installs
them), a fresh cluster in a temporary folder, listening on a free 127.0.0.1 port with a password, stopped with its
whole process group at the end. As root it runs as the `postgres` user (postgres refuses to run as root)."""

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.e2e.test_dagster_dev import free_port

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
    pytest.fail("PostgreSQL server binaries (initdb, postgres) not found: `make system-packages` installs "
                "Debian's postgresql package")


def as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@pytest.fixture(scope="session")
def postgres():
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
    assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
    port = free_port()
    log = log_path.open("w")
    # durability settings off: a test database, thrown away at the end
    proc = subprocess.Popen(as_server_user([str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                            "-p", str(port), "-k", str(root), "-c", "fsync=off",
                                            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                            "-c", "max_connections=200"]),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Postgres("127.0.0.1", port, "dagster", password)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"postgres exited:\n{log_path.read_text()}"
            try:
                server.connect().close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(f"postgres did not accept connections in {START_TIMEOUT_S}s:\n"
                                f"{log_path.read_text()}")
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


@pytest.fixture
def pg_database(postgres) -> str:
    """A fresh, empty database on the shared server."""
    name = f"dagster_{secrets.token_hex(4)}"
    postgres.create_database(name)
    return name
