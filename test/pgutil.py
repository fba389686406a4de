"""A real PostgreSQL server for tests: initdb in a temporary folder, Unix socket only.

Binaries: ``$FACEREC_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's
postgresql package; ``make setup`` installs it as root), else ``initdb`` on PATH. initdb and
postgres refuse to run as root: as root the server runs as the ``postgres`` user (or
``nobody``) through ``runuser`` or ``setpriv``. When none of that works, :func:`server_or_skip`
skips the test with the reason. The server listens only on a Unix socket in its own folder
(``listen_addresses=''``), so parallel runs never meet; clients connect as the superuser
``postgres`` with trust authentication.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from typing import List, Optional

import pytest

PORT = 5432  # only names the socket file inside our own folder


def find_bin_dir() -> Optional[str]:
    """Folder holding initdb, pg_ctl and postgres, or None."""
    candidates = [os.environ.get("FACEREC_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                         reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for folder in candidates:
        if folder and all(os.access(os.path.join(folder, tool), os.X_OK)
                          for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _run_as() -> (List[str], Optional[pwd.struct_passwd]):
    """(command prefix, user) to run the server unprivileged; ([], None) when not root."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                    "--clear-groups", "--"], user
    raise RuntimeError("running as root, and neither runuser nor setpriv with a 'postgres' or "
                       "'nobody' user is available to run PostgreSQL unprivileged")


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder; :meth:`start`, :meth:`stop`, :meth:`url`."""

    def __init__(self, bin_dir: str, settings: Optional[dict] = None,
                 netns: Optional[str] = None, host: Optional[str] = None):
        self.bin_dir = bin_dir
        self.settings = dict(settings or {})  # extra postgres -c settings
        self.prefix, user = _run_as()
        if netns:  # run the server inside that network namespace (root)
            self.prefix = ["ip", "netns", "exec", netns] + self.prefix
        self.host = host  # listen on this TCP address too (trusted from its /24)
        self.root = tempfile.mkdtemp(prefix="facerec-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self._databases = 0
        os.makedirs(self.data, mode=0o700)
        if user is not None:
            for path in (self.root, self.data):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        if host:
            network = host.rsplit(".", 1)[0] + ".0/24"
            with open(os.path.join(self.data, "pg_hba.conf"), "a") as hba:
                hba.write(f"host all all {network} trust\n")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.prefix + [os.path.join(self.bin_dir, tool), *args],
                                capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): "
                               f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result

    def start(self) -> None:
        listen = self.host or ""
        options = f"-k {self.data} -c listen_addresses='{listen}' -p {PORT} -c fsync=on"
        for key, value in self.settings.items():
            options += f" -c {key}='{value}'"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options,
                  "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, roll back open transactions)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def url(self, database: str = "postgres", tcp: bool = False) -> str:
        if tcp:
            return f"postgresql://postgres@{self.host}:{PORT}/{database}"
        return f"postgresql://postgres@/{database}?host={self.data}&port={PORT}"

    def new_database(self, tcp: bool = False) -> str:
        """Create an empty database; return its URL (over TCP to ``host`` when ``tcp``)."""
        import psycopg
        self._databases += 1
        name = f"gallery{self._databases}"
        with psycopg.connect(self.url(tcp=tcp), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name, tcp)

    def log_text(self) -> str:
        with open(self.log, errors="replace") as handle:
            return handle.read()

    def cleanup(self) -> None:
        if os.path.isdir(self.data) and self.running:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def server_or_skip(settings: Optional[dict] = None, netns: Optional[str] = None,
                   host: Optional[str] = None) -> PostgresServer:
    """A started server, or pytest.skip naming what is missing."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install "
                    "Debian's postgresql package (make setup does as root) or set "
                    "FACEREC_PG_BIN to their folder")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (requirements/python.txt; run make setup)")
    try:
        server = PostgresServer(bin_dir, settings, netns, host)
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot run a PostgreSQL server here: {error}")
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server
