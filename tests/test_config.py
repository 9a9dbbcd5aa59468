"""Configuration is validated at the edge: every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from squashkit import config
from squashkit.errors import BadInput


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_pyproject_table_is_found_from_a_subdirectory(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.squashkit]\n[tool.squashkit.environments.dev]\nsettings = "site.settings"\n')
    (tmp_path / "app" / "deep").mkdir(parents=True)
    loaded = config.load(start=tmp_path / "app" / "deep")
    assert loaded.root == tmp_path.resolve()
    assert loaded.manage_py == tmp_path.resolve() / "manage.py"
    assert loaded.backup_dir == tmp_path.resolve() / "backups"
    assert loaded.environment(None) == ("dev", loaded.environments["dev"])


def test_squashkit_toml_wins_over_pyproject_in_the_same_directory(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.squashkit]\n[tool.squashkit.environments.a]\nsettings = "a.settings"\n')
    write(tmp_path / "squashkit.toml", '[environments.b]\nsettings = "b.settings"\n')
    assert list(config.load(start=tmp_path).environments) == ["b"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[environments.dev\n", "not valid TOML"),
        ('colour = "red"\n[environments.dev]\nsettings = "s"\n', "colour: unknown key"),
        ("[environments.dev]\nenv = {}\n", "environments.dev.settings: Field required"),
        ('[environments.dev]\nsettings = "not a module"\n', "is not a dotted Python module path"),
        ("environments = {}\n", "define at least one environment"),
        ('exclude = ["auth.Permission; DROP"]\n[environments.dev]\nsettings = "s"\n', "is not an app label"),
        ('extensions = ["pg_trgm; DROP"]\n[environments.dev]\nsettings = "s"\n', "is not an extension name"),
    ],
)
def test_invalid_config_is_one_clear_line(tmp_path, text, message):
    path = write(tmp_path / "squashkit.toml", text)
    with pytest.raises(BadInput) as caught:
        config.load(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_environment_choice_flag_then_variable_then_default(tmp_path, monkeypatch):
    path = write(
        tmp_path / "squashkit.toml",
        'default_env = "dev"\n[environments.dev]\nsettings = "s"\n[environments.prod]\nsettings = "s"\n',
    )
    loaded = config.load(path)
    monkeypatch.delenv("SQUASHKIT_ENV", raising=False)
    assert loaded.environment(None)[0] == "dev"
    monkeypatch.setenv("SQUASHKIT_ENV", "prod")
    assert loaded.environment(None)[0] == "prod"
    assert loaded.environment("dev")[0] == "dev"
    with pytest.raises(BadInput, match="unknown environment 'qa'.*known: dev, prod"):
        loaded.environment("qa")


def test_ambiguous_environment_asks_which(tmp_path, monkeypatch):
    monkeypatch.delenv("SQUASHKIT_ENV", raising=False)
    loaded = config.load(write(tmp_path / "squashkit.toml", '[environments.a]\nsettings = "s"\n[environments.b]\nsettings = "s"\n'))
    with pytest.raises(BadInput, match="which environment"):
        loaded.environment(None)


def test_env_values_expand_variables_and_name_a_missing_one(tmp_path, monkeypatch):
    loaded = config.load(write(tmp_path / "squashkit.toml", '[environments.dev]\nsettings = "s"\nenv = { DATABASE_URL = "${DEV_URL}" }\n'))
    monkeypatch.setenv("DEV_URL", "postgres:///x")
    assert loaded.environments["dev"].expanded_env() == {"DATABASE_URL": "postgres:///x"}
    monkeypatch.delenv("DEV_URL")
    with pytest.raises(BadInput, match=r"env.DATABASE_URL uses \$\{DEV_URL\} but DEV_URL is not set"):
        loaded.environments["dev"].expanded_env()


def test_no_config_anywhere_says_how_to_add_one(tmp_path):
    with pytest.raises(BadInput, match=r"add \[tool.squashkit\]"):
        config.load(start=tmp_path)
