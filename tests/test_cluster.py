"""The throwaway cluster starts once, is reused, runs unprivileged, and keeps its password off argv."""

from __future__ import annotations

import os
import pwd

import psycopg

from squashkit import cluster


def test_start_is_idempotent_and_reuses_the_running_cluster(pg):
    again = cluster.start(pg.directory)
    assert again.port == pg.port
    assert cluster.running(pg.directory) == again


def test_server_runs_as_an_unprivileged_user(pg):
    pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    owner = os.stat(f"/proc/{pid}").st_uid
    assert owner != 0
    if os.geteuid() == 0:
        assert pwd.getpwuid(owner).pw_name == "postgres"


def test_superuser_needs_its_password(pg):
    with psycopg.connect(**pg.conninfo()) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    wrong = {**pg.conninfo(), "password": "not-the-password"}
    try:
        psycopg.connect(**wrong).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        raise AssertionError("the cluster accepted a wrong password")
    assert oct(pg.passfile.stat().st_mode & 0o777) == "0o600"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            assert pg.password.encode() not in cmdline
