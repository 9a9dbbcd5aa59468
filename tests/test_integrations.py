"""How users run squashkit and keep its bundles: encrypted and compressed bundles, ``manage.py
squashkit``, ``--json`` against the published schemas, and a demo log that a file keeps readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pyrage
import pytest

from squashkit.bundle import read_manifest
from tests.conftest import REPO, SAMPLE, project_env, squashkit, table_fingerprints, write_config


def fingerprint(sample_db) -> dict:
    with sample_db.connect() as conn:
        return table_fingerprints(conn, skip=("django_migrations",))


def published(name: str) -> dict:
    return json.loads((REPO / "docs" / "schemas" / f"{name}.json").read_text())


def test_an_encrypted_bundle_rolls_back_with_its_identity_and_is_refused_with_another(sample_db, tmp_path):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"# test key\n{identity}\n")
    (tmp_path / "other.txt").write_text(f"{pyrage.x25519.Identity.generate()}\n")
    made = squashkit("--config", str(config), "backup", "--json", "--encrypt-to", str(identity.to_public()))
    assert made.code == 0, made.stderr
    report = json.loads(made.stdout)
    jsonschema.validate(report, published("backup"))
    bundle = Path(report["path"])
    manifest = read_manifest(bundle)
    assert manifest.encrypted == sorted(manifest.files) and manifest.encrypted_to == [str(identity.to_public())]
    assert {p.name for p in bundle.iterdir()} == {"manifest.json", "db.json.gz.age", "db.dump.age", "contenttypes.json.age",
                                                  "migrations.tar.gz.age", "log.txt.age"}
    assert all(p.read_bytes().startswith(b"age-encryption.org/v1") for p in bundle.iterdir() if p.name != "manifest.json")

    before = fingerprint(sample_db)
    with sample_db.connect() as conn:
        conn.execute("DELETE FROM orders_orderline WHERE id % 3 = 0")
    changed = fingerprint(sample_db)
    for args, phrase in (([], "pass --identity FILE"), (["--identity", str(tmp_path / "other.txt")], "does not decrypt")):
        refused = squashkit("--config", str(config), "rollback", str(bundle), "--yes", *args)
        assert refused.code == 2 and phrase in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert fingerprint(sample_db) == changed
    rolled = squashkit("--config", str(config), "rollback", str(bundle), "--yes",
                       env={"SQUASHKIT_AGE_IDENTITY": str(tmp_path / "key.txt")})
    assert rolled.code == 0, rolled.stderr
    assert fingerprint(sample_db) == before


def test_db_json_gz_loads_with_plain_loaddata_and_manage_py_squashkit_writes_the_same_bundle(sample_db, tmp_path):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    plain = squashkit("--config", str(config), "backup", "--env", "dev")
    assert plain.code == 0, plain.stderr
    # manage.py squashkit: the same command line, the environment found from the settings module.
    env = {**project_env(sample_db.pg, sample_db.name), "COLUMNS": "200"}
    env.pop("SQUASHKIT_ENV", None)
    through_django = subprocess.run([sys.executable, str(SAMPLE / "manage.py"), "squashkit", "--config", str(config), "backup"],
                                    cwd=SAMPLE, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert through_django.returncode == 0, through_django.stderr
    first, second = (read_manifest(Path(out.strip().splitlines()[-1])) for out in (plain.stdout, through_django.stdout))
    assert set(first.files) == set(second.files) and "db.json.gz" in first.files
    assert [e.model_dump(include={"json_objects", "contents", "json_tables"}) for e in first.databases] == \
           [e.model_dump(include={"json_objects", "contents", "json_tables"}) for e in second.databases]
    assert first.migration_files == second.migration_files

    # Django's own loaddata reads db.json.gz (rollback --loaddata runs manage.py loaddata on it).
    before = fingerprint(sample_db)
    with sample_db.connect() as conn:
        conn.execute("UPDATE auth_user SET first_name = 'changed'")
    bundle = Path(plain.stdout.strip().splitlines()[-1])
    loaded = squashkit("--config", str(config), "rollback", str(bundle / "db.json.gz"), "--loaddata", "--yes")
    assert loaded.code == 0, loaded.stderr
    after = fingerprint(sample_db)
    assert after["public.auth_user"] == before["public.auth_user"]


def test_json_output_validates_against_the_published_schemas(sample_db, tmp_path):
    config = write_config(tmp_path, {"dev": {"DATABASE_URL": sample_db.url()}})
    run = lambda *args: squashkit("--config", str(config), *args)  # noqa: E731
    for name in ("backup", "status", "cleanup", "check", "plan"):
        printed = run("schema", name)
        assert printed.code == 0 and json.loads(printed.stdout) == published(name), f"docs/schemas/{name}.json is stale"
    outputs = {
        "backup": run("-q", "backup", "--json"),
        "status": run("status", "--json"),
        "cleanup": run("cleanup", "--list", "--keep", "0", "--json"),
        "check": run("check", "--json"),
        "plan": run("squash", "--dry-run", "--json"),
    }
    for name, result in outputs.items():
        assert result.code in (0, 1), (name, result.stderr)
        jsonschema.validate(json.loads(result.stdout), published(name))
    assert json.loads(outputs["cleanup"].stdout)[0]["kind"] == "bundle"
    assert [step["name"] for step in json.loads(outputs["plan"].stdout)["steps"]][:1] == ["preflight"]


@pytest.mark.skipif(os.environ.get("SQUASHKIT_SKIP_DEMO") == "1", reason="SQUASHKIT_SKIP_DEMO=1")
def test_the_demo_log_written_to_a_file_has_no_nul_or_escape_bytes(tmp_path):
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(SQUASHKIT_DEMO_DIR=str(tmp_path / "demo"), SQUASHKIT_CLUSTER_DIR=f"{os.environ.get('SQUASHKIT_TEST_CLUSTER_DIR', '/tmp/squashkit-test-cluster')}-demo")
    try:
        with log.open("wb") as out:
            result = subprocess.run([str(REPO / "scripts" / "demo"), "200"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, timeout=600)
    finally:  # the demo leaves its cluster running for the user; the test does not
        subprocess.run([sys.executable, "-m", "squashkit.cli", "cluster", "stop", env["SQUASHKIT_CLUSTER_DIR"]],
                       env=env, capture_output=True)
    text = log.read_bytes()
    assert result.returncode == 0, text[-3000:].decode(errors="replace")
    assert b"\x00" not in text and b"\x1b" not in text and b"\r" not in text
    assert b"== squashkit backup --env dev" in text and b"Backup of dev" in text and b"   \n" not in text
