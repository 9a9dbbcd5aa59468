"""A throwaway PostgreSQL cluster: the embedded default for the demo, the tests and the benchmarks.

Nobody has to set up a database to try squashkit. ``start()`` creates (once) and
starts a private cluster in a temporary directory, listening on 127.0.0.1 on a
free port and on a socket inside that directory, with a password-protected
superuser whose password lives only in a 0600 passfile. It is idempotent: a
running cluster is reused as it is.

PostgreSQL refuses to run as root, so when we are root the server programs run
as the ``postgres`` OS user through ``runuser``. When no server binaries are
installed they are installed with ``apt-get``.

Command line::

    python -m squashkit.cluster start      # prints shell exports (PGHOST, PGPORT, ...)
    python -m squashkit.cluster env        # the same exports for a running cluster
    python -m squashkit.cluster stop
    python -m squashkit.cluster destroy    # stop and delete the directory
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import sh
from pydantic import BaseModel, Field

from squashkit.errors import OperationFailed

SUPERUSER = "squashkit"
UNPRIVILEGED_OS_USER = "postgres"


def default_directory() -> Path:
    """``$SQUASHKIT_CLUSTER_DIR``, or one directory per OS user under the temp dir."""
    configured = os.environ.get("SQUASHKIT_CLUSTER_DIR")
    if configured:
        return Path(configured).resolve()
    return Path(tempfile.gettempdir()) / f"squashkit-cluster-{os.getuid()}"


class Cluster(BaseModel):
    """Where a running throwaway cluster is and how to reach it as its superuser."""

    directory: Path = Field(description="The cluster's own directory: data, socket, log, passfile.")
    bindir: Path = Field(description="The PostgreSQL server binaries it runs with.")
    host: str = Field("127.0.0.1", description="TCP address it listens on.")
    port: int = Field(description="TCP port it listens on.")
    superuser: str = Field(SUPERUSER, description="Superuser role name.")

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def passfile(self) -> Path:
        return self.directory / "pgpass"

    @property
    def password(self) -> str:
        return (self.directory / "password").read_text().strip()

    def conninfo(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> dict:
        """Keyword arguments for ``psycopg.connect``; the superuser's by default."""
        return {
            "host": self.host,
            "port": self.port,
            "dbname": dbname,
            "user": user or self.superuser,
            "password": password if user else self.password,
        }

    def url(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        """A ``postgres://`` URL, e.g. for a Django project's ``DATABASE_URL``."""
        from urllib.parse import quote

        user = user or self.superuser
        password = password if password is not None else (self.password if user == self.superuser else None)
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgres://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def environ(self) -> dict[str, str]:
        """libpq environment variables that make psql, pg_dump and Django reach this cluster."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGPASSFILE": str(self.passfile),
        }


# --- finding and installing the server ------------------------------------------------------


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin directory on this machine, if any."""
    configured = os.environ.get("SQUASHKIT_PG_BINDIR")
    if configured:
        return Path(configured) if (Path(configured) / "initdb").exists() else None
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def install_server() -> Path:
    """Install PostgreSQL with apt-get (Debian/Ubuntu), without letting it start a cluster of its own."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise OperationFailed(
            "PostgreSQL server binaries not found and cannot install them here: "
            "install PostgreSQL (e.g. `apt-get install postgresql`) or set SQUASHKIT_PG_BINDIR."
        )
    print("squashkit: installing PostgreSQL with apt-get ...", file=sys.stderr)
    # Keep the package from creating and starting a 'main' cluster we would never use.
    conf = Path("/etc/postgresql-common/createcluster.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists():
        conf.write_text("create_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        sh.Command("apt-get")("update", "-q", _env=env, _err_to_out=True)
        sh.Command("apt-get")("install", "-y", "-q", "--no-install-recommends", "postgresql", _env=env, _err_to_out=True)
    except sh.ErrorReturnCode as exc:
        tail = exc.stdout.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise OperationFailed(f"apt-get could not install PostgreSQL: {tail[0]}") from exc
    bindir = find_bindir()
    if bindir is None:
        raise OperationFailed("apt-get installed PostgreSQL but no initdb was found under /usr/lib/postgresql")
    return bindir


def install_postgis(cluster: Cluster) -> None:
    """PostGIS for the cluster's server, and the GDAL and GEOS libraries GeoDjango loads, installed
    with apt-get (Debian/Ubuntu, as root) when missing; ``OperationFailed`` says why when they
    cannot be. The running server needs no restart: CREATE EXTENSION loads the library itself."""
    if _has_extension(cluster, "postgis") and _has_gdal():
        return
    package = f"postgresql-{cluster.bindir.parent.name}-postgis-3"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise OperationFailed(f"PostGIS or GDAL is missing and cannot be installed here (not root, or no apt-get): install {package} and gdal-bin")
    print(f"squashkit: installing {package} and gdal-bin with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = sh.Command("apt-get")
    try:
        try:
            apt("install", "-y", "-q", "--no-install-recommends", package, "gdal-bin", _env=env, _err_to_out=True)
        except sh.ErrorReturnCode:  # stale package lists: update them once and try again
            apt("update", "-q", _env=env, _err_to_out=True)
            apt("install", "-y", "-q", "--no-install-recommends", package, "gdal-bin", _env=env, _err_to_out=True)
    except sh.ErrorReturnCode as exc:
        tail = exc.stdout.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise OperationFailed(f"apt-get could not install {package} and gdal-bin: {tail[0]}") from exc
    if not _has_extension(cluster, "postgis"):
        raise OperationFailed(f"{package} is installed but the server at {cluster.bindir} does not offer postgis")


def _has_extension(cluster: Cluster, name: str) -> bool:
    import psycopg

    with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", [name]).fetchone() is not None


def _has_gdal() -> bool:
    """GeoDjango finds GDAL and GEOS with ctypes, as this does."""
    from ctypes.util import find_library

    return bool(find_library("gdal") and find_library("geos_c"))


# --- running as an unprivileged user --------------------------------------------------------


def _server_os_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_OS_USER)
    except KeyError:
        sh.Command("useradd")("--system", "--no-create-home", "--shell", "/usr/sbin/nologin", UNPRIVILEGED_OS_USER)
        return pwd.getpwnam(UNPRIVILEGED_OS_USER)


def _run_server_program(program: Path, *args: str) -> str:
    """Run a server program as the server's OS user; return its output or raise with it."""
    user = _server_os_user()
    argv = [str(program), *args]
    if user is not None:
        argv = ["-u", user.pw_name, "--", *argv]
        command = sh.Command("runuser")
    else:
        command = sh.Command(argv.pop(0))
    try:
        return str(command(*argv, _err_to_out=True, _cwd="/"))
    except sh.ErrorReturnCode as exc:
        raise OperationFailed(
            f"{program.name} failed: {exc.stdout.decode(errors='replace').strip()[-2000:]}"
        ) from exc


def _give_to_server_user(path: Path) -> None:
    user = _server_os_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


# --- the cluster's life cycle ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _read(directory: Path) -> Cluster | None:
    state = directory / "cluster.json"
    if not state.exists():
        return None
    return Cluster.model_validate_json(state.read_text())


def _is_running(cluster: Cluster) -> bool:
    try:
        with socket.create_connection((cluster.host, cluster.port), timeout=1):
            pass
    except OSError:
        return False
    pid_file = cluster.data_dir / "postmaster.pid"
    return pid_file.exists()


def _initdb(directory: Path, bindir: Path) -> None:
    """Create the data directory with a random superuser password (written 0600, never on argv)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # the server's OS user must reach data/ and run/ inside it
    password = secrets.token_urlsafe(24)
    password_file = directory / "password"
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    for sub in ("data", "run", "log"):
        (directory / sub).mkdir(mode=0o700, exist_ok=True)
        _give_to_server_user(directory / sub)
    os.chmod(directory / "run", 0o755)
    # initdb reads the password from a file the server user can read, removed right after.
    pwfile = directory / "log" / "initdb-pw"
    pwfile.touch(mode=0o600)
    pwfile.write_text(password + "\n")
    _give_to_server_user(pwfile)
    try:
        _run_server_program(
            bindir / "initdb",
            "-D", str(directory / "data"),
            "-U", SUPERUSER,
            "--pwfile", str(pwfile),
            "--auth", "scram-sha-256",
            "--encoding", "UTF8",
            "--locale", "C.UTF-8",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    conf = directory / "data" / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write("\ninclude_if_exists = 'squashkit.conf'\n")


def _write_runtime_conf(cluster: Cluster) -> None:
    """Port, socket and throwaway-only durability settings, rewritten at each start."""
    settings = {
        "port": str(cluster.port),
        "listen_addresses": f"'{cluster.host}'",
        "unix_socket_directories": "'" + str(cluster.socket_dir).replace("'", "''") + "'",
        "max_connections": "100",
        # A throwaway cluster: speed over crash safety of the cluster itself.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "logging_collector": "off",
    }
    path = cluster.data_dir / "squashkit.conf"
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    _give_to_server_user(path)


def _write_passfile(cluster: Cluster) -> None:
    def field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    lines = [
        f"{host}:{cluster.port}:*:{cluster.superuser}:{field(cluster.password)}\n"
        for host in (cluster.host, "localhost", field(str(cluster.socket_dir)))
    ]
    cluster.passfile.touch(mode=0o600)
    cluster.passfile.write_text("".join(lines))


def start(directory: Path | None = None) -> Cluster:
    """Start the throwaway cluster in ``directory``, creating it first if needed; reuse it if running."""
    directory = Path(directory or default_directory())
    existing = _read(directory)
    if existing is not None and _is_running(existing):
        return existing

    bindir = existing.bindir if existing and (existing.bindir / "postgres").exists() else None
    bindir = bindir or find_bindir() or install_server()
    if not (directory / "data" / "PG_VERSION").exists():
        _initdb(directory, bindir)

    last_error: OperationFailed | None = None
    for _attempt in range(5):
        # Reuse the recorded port when it is free; otherwise take another one.
        port = existing.port if existing and _port_is_free(existing.port) else _free_port()
        cluster = Cluster(directory=directory, bindir=bindir, port=port)
        _write_runtime_conf(cluster)
        try:
            _run_server_program(
                bindir / "pg_ctl", "start", "-w", "-t", "60",
                "-D", str(cluster.data_dir),
                "-l", str(directory / "log" / "postgres.log"),
            )
        except OperationFailed as exc:
            last_error = exc
            existing = None
            time.sleep(0.5)
            continue
        (directory / "cluster.json").write_text(cluster.model_dump_json(indent=2))
        _write_passfile(cluster)
        return cluster
    raise OperationFailed(f"could not start the throwaway PostgreSQL cluster in {directory}: {last_error}")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop(directory: Path | None = None) -> bool:
    """Stop the cluster if it runs; True if it was running."""
    directory = Path(directory or default_directory())
    cluster = _read(directory)
    if cluster is None or not (cluster.data_dir / "postmaster.pid").exists():
        return False
    _run_server_program(cluster.bindir / "pg_ctl", "stop", "-w", "-m", "fast", "-D", str(cluster.data_dir))
    return True


def destroy(directory: Path | None = None) -> None:
    """Stop the cluster and delete its directory."""
    directory = Path(directory or default_directory())
    stop(directory)
    shutil.rmtree(directory, ignore_errors=True)


def running(directory: Path | None = None) -> Cluster | None:
    """The running cluster in ``directory``, or None."""
    cluster = _read(Path(directory or default_directory()))
    return cluster if cluster is not None and _is_running(cluster) else None


def _exports(cluster: Cluster) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in cluster.environ().items())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    action = argv[0] if argv else "start"
    directory = Path(argv[1]) if len(argv) > 1 else None
    try:
        if action == "start":
            sys.stdout.write(_exports(start(directory)))
        elif action == "env":
            cluster = running(directory)
            if cluster is None:
                print("squashkit: the throwaway cluster is not running (start it with `start`)", file=sys.stderr)
                return 1
            sys.stdout.write(_exports(cluster))
        elif action == "stop":
            stop(directory)
        elif action == "destroy":
            destroy(directory)
        elif action == "status":
            cluster = running(directory)
            print(json.dumps(cluster.model_dump(mode="json") if cluster else None))
        else:
            print(f"usage: python -m squashkit.cluster start|env|stop|destroy|status [DIR] (not {action!r})", file=sys.stderr)
            return 2
    except OperationFailed as exc:
        print(f"squashkit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
