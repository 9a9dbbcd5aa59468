"""Bundles in object storage: a real S3-compatible server on 127.0.0.1 (moto's standalone server,
authentication on), real s3fs. A bundle is listed only once every file reads back as the
manifest says; a bundle is downloaded and checked before anything is dropped; wrong credentials,
a missing bucket, a cut connection and a tampered object each end in one line with nothing lost."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, squashkit, table_fingerprints
from tests.s3server import cutting_relay, s3_server

BUCKET = "squashkit-backups"


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


def remote_config(directory: Path, database_url: str, endpoint: str, backup_dir: str) -> Path:
    """A squashkit.toml whose backup_dir is a URL; the credentials are named, never written."""
    path = directory / "squashkit.toml"
    path.write_text(
        f'manage_py = "{SAMPLE / "manage.py"}"\npython = "{sys.executable}"\nbackup_dir = "{backup_dir}"\n'
        f'state_dir = "{directory / "state"}"\n'
        f'[storage]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n'
        'access_key_id_env = "TEST_S3_KEY_ID"\nsecret_access_key_env = "TEST_S3_SECRET"\n'
        f'[environments.dev]\nsettings = "sample_project.settings"\nenv = {{ DATABASE_URL = "{database_url}" }}\n'
    )
    return path


def fingerprint(sample_db) -> dict:
    with sample_db.connect() as conn:
        return table_fingerprints(conn, skip=("django_migrations",))


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("squashkit: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_backup_to_s3_cleanup_there_and_rollback_from_it_with_identical_rows(s3, sample_db, tmp_path):
    config = remote_config(tmp_path, sample_db.url(), s3.url, f"s3://{BUCKET}/roundtrip")
    secrets = {"TEST_S3_KEY_ID": s3.key_id, "TEST_S3_SECRET": s3.secret}
    run = lambda *args: squashkit("--config", str(config), *args, env=secrets)  # noqa: E731

    first = run("backup", "--json")
    assert first.code == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["path"].startswith(f"s3://{BUCKET}/roundtrip/dev-") and report["durations"]["upload"] >= 0
    # Published: every file and the manifest are in the bucket; nothing stays behind on this machine.
    name = report["path"].rsplit("/", 1)[1]
    stored = s3.keys(BUCKET, f"roundtrip/{name}/")
    assert {f"roundtrip/{name}/{f}" for f in report["files"]} == set(stored)
    assert not list((tmp_path / "state" / "outgoing").iterdir())
    assert s3.url not in first.stderr and s3.secret not in first.stderr + first.stdout

    second = run("-q", "backup")
    assert second.code == 0, second.stderr
    latest = second.stdout.strip()
    assert latest.startswith(f"s3://{BUCKET}/roundtrip/dev-") and len(second.stdout.strip().splitlines()) == 1

    listed = run("cleanup", "--list", "--keep", "1", "--json")
    assert listed.code == 0, listed.stderr
    assert [(i["kind"], i["name"]) for i in json.loads(listed.stdout)] == [("bundle", report["path"])]
    cleaned = run("cleanup", "--keep", "1", "--yes")
    assert cleaned.code == 0, cleaned.stderr
    assert not s3.keys(BUCKET, f"roundtrip/{name}/") and s3.keys(BUCKET, latest.split(f"{BUCKET}/", 1)[1] + "/manifest.json")

    before = fingerprint(sample_db)
    with sample_db.connect() as conn:
        conn.execute("DELETE FROM orders_orderline WHERE id % 2 = 0")
        conn.execute("UPDATE auth_user SET first_name = 'changed'")
    changed = fingerprint(sample_db)

    # A tampered object: refused after the download, before anything is dropped.
    key = f"{latest.split(f'{BUCKET}/', 1)[1]}/db.json.gz"
    original = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=original[:-10] + b"tampered!!")
    refused = run("rollback", latest, "--env", "dev", "--yes")
    assert refused.code == 2 and "db.json.gz does not match its sha256" in one_line(refused), refused.stderr
    assert fingerprint(sample_db) == changed
    assert not list((tmp_path / "state" / ".downloads").iterdir())

    s3.client().put_object(Bucket=BUCKET, Key=key, Body=original)
    rolled = run("rollback", latest, "--env", "dev", "--yes")
    assert rolled.code == 0, rolled.stderr
    assert fingerprint(sample_db) == before
    status = run("status", "--json")
    assert json.loads(status.stdout)["location"] == f"s3://{BUCKET}/roundtrip"


def test_wrong_credentials_a_missing_bucket_and_a_cut_connection_each_end_in_one_line_and_lose_nothing(s3, sample_db, tmp_path):
    secrets = {"TEST_S3_KEY_ID": s3.key_id, "TEST_S3_SECRET": s3.secret}

    wrong = remote_config(tmp_path, sample_db.url(), s3.url, f"s3://{BUCKET}/errors")
    result = squashkit("--config", str(wrong), "backup", env={**secrets, "TEST_S3_SECRET": "not-the-secret"})
    assert result.code == 2 and "access denied" in one_line(result), result.stderr
    assert "not-the-secret" not in result.stderr

    missing = remote_config(tmp_path, sample_db.url(), s3.url, "s3://no-such-bucket/errors")
    result = squashkit("--config", str(missing), "backup", env=secrets)
    assert result.code == 2 and "bucket does not exist" in one_line(result), result.stderr

    port = int(s3.url.rsplit(":", 1)[1])
    with cutting_relay(port, after_bytes=200_000) as relay:
        cut = remote_config(tmp_path, sample_db.url(), f"http://127.0.0.1:{relay}", f"s3://{BUCKET}/errors")
        result = squashkit("--config", str(cut), "backup", env=secrets)
    line = one_line(result)
    assert result.code == 1 and "nothing was published" in line, result.stderr
    # Nothing that looks like a bundle in the store; the verified bundle is kept here.
    assert not [k for k in s3.keys(BUCKET, "errors/") if k.endswith("/manifest.json")]
    kept = Path(line.rsplit("the verified bundle stays at ", 1)[1])
    assert (kept / "manifest.json").is_file() and kept.parent == tmp_path / "state" / "outgoing"
    again = remote_config(tmp_path, sample_db.url(), s3.url, f"s3://{BUCKET}/errors")
    listed = squashkit("--config", str(again), "cleanup", "--list", "--keep", "0", "--json", env=secrets)
    assert listed.code == 0 and json.loads(listed.stdout) == [], listed.stderr
