"""A throwaway PostgreSQL server for the tests of the lab's shared run store.

One server per test session (so one per pytest-xdist worker): ``initdb`` in a fresh temporary
directory, then ``pg_ctl start`` listening on a Unix socket in that directory and on no TCP
port at all, so that any number of sessions run side by side without a port to collide on.
Passwords are checked (SCRAM), as a real deployment does. As root the server runs as the
``postgres`` system user that Debian's package creates (PostgreSQL refuses to run as root);
otherwise as the current user. ``stop()`` stops it and removes the directory.

The programs come from Debian's ``postgresql`` package, which ``make test`` installs when it is
missing (``.ci/install-postgresql``); without them the tests that need a server skip, saying so.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

#: The role the lab connects as (the owner of each test database), and its password: with
#: characters that must be escaped in a URL, as real passwords have.
LAB_ROLE = "lab"
LAB_PASSWORD = "s3cret:@/%pw"
SUPERUSER = "postgres"

MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl) are not installed: `make test` installs "
    "Debian's postgresql package when apt-get can reach a mirror (.ci/install-postgresql)"
)


def server_programs() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin``; ``None`` when neither has them."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(os.path.realpath(initdb)).parent
    versions = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

    return Path(max(versions, key=version)).parent if versions else None


class PostgresServer:
    """A running server; :meth:`create_database` makes a fresh database for one test."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="optimlab-pg-"))
        self.data = self.root / "data"
        self.socket_dir = str(self.root)
        self.superuser_password = "super-" + os.urandom(8).hex()
        self._names = itertools.count()
        self._account = None
        if os.geteuid() == 0:
            try:
                self._account = pwd.getpwnam(SUPERUSER)
            except KeyError:
                self._account = pwd.getpwnam("nobody")
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
        self.root.chmod(0o755)  # the socket must be reachable by whoever runs the tests

    def _run(self, *args: str) -> None:
        kwargs = {}
        if self._account is not None:
            kwargs = {
                "user": self._account.pw_uid,
                "group": self._account.pw_gid,
                "extra_groups": [],
            }
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(self.root)}
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **kwargs,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr}\n{tail}")

    def start(self) -> PostgresServer:
        pwfile = self.root / "superuser-password"
        pwfile.write_text(self.superuser_password + "\n")
        if self._account is not None:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{self.socket_dir}'",
                # A throwaway cluster: durability costs time and buys nothing.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        from psycopg import sql

        # Utility statements take no parameters: the password goes in as a quoted literal.
        role = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")
        self.admin(role.format(sql.Identifier(LAB_ROLE), sql.Literal(LAB_PASSWORD)))
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, query, *args, dbname: str = "postgres"):
        """Run ``query`` as the superuser (autocommit); returns the rows, if any."""
        import psycopg

        with psycopg.connect(
            host=self.socket_dir,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname=dbname,
            autocommit=True,
        ) as conn:
            cursor = conn.execute(query, args or None)
            return cursor.fetchall() if cursor.description else None

    def create_database(self, owner: str = LAB_ROLE) -> str:
        """A new, empty database owned by ``owner``, as the docs' recipe makes it; its name."""
        name = f"lab_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def url(self, database: str, *, password: str = LAB_PASSWORD, user: str = LAB_ROLE) -> str:
        """The ``--storage`` URL of ``database`` (over the Unix socket)."""
        secret = quote(password, safe="")
        return f"postgresql://{user}:{secret}@/{database}?host={quote(self.socket_dir, safe='')}"
