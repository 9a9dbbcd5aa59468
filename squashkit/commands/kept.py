"""``squashkit status`` and ``squashkit cleanup``: the last runs, and what squashkit keeps.

Side-mode runs keep the replaced database (``<name>__squashkit_prev``); a killed run may leave a
side or scratch database; bundles accumulate. ``kept`` lists them, ``cleanup`` removes them
after asking (a protected environment wants its database's name).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from squashkit import journal, postgres, runs, schema, steps, store
from squashkit.config import Config
from squashkit.databases import primary_aliases
from squashkit.runs import Log, stderr_log
from squashkit.target import resolve


def status(config: Config, *, limit: int = 10) -> list[journal.Run]:
    """The last runs, newest last."""
    return journal.runs(config.backup_dir)[-limit:]


class Kept(BaseModel):
    """Something squashkit kept that ``cleanup`` may remove."""

    kind: Literal["database", "bundle", "journal"]
    name: str
    detail: str
    env: str = Field(description="The environment it belongs to.")
    alias: str | None = Field(None, description="For a database: the alias whose server holds it.")


def kept(config: Config, *, env: str | None = None, keep_bundles: int = 3) -> list[Kept]:
    """Databases kept by side-mode runs (``__squashkit_prev``, leftovers ``__squashkit_new``), and
    bundles and journals beyond the newest ``keep_bundles`` per environment."""
    found: list[Kept] = []
    names = [env] if env else list(config.environments)
    for env_name in names:
        target = resolve(config, env_name)
        for alias in primary_aliases(target.project):  # once per database, however many aliases reach it
            live = target.params(alias).dbname
            with postgres.connect(target.server(alias).with_dbname("postgres")) as conn:
                for name in (live + steps.KEPT, live + steps.SIDE, schema.scratch_name(live), schema.scratch_name(live + steps.SIDE),
                             schema.scratch_name(live, schema.OLD_BUILD_SUFFIX), schema.scratch_name(live, schema.FRESH_SUFFIX)):
                    if postgres.database_exists(conn, name):
                        found.append(Kept(kind="database", name=name, env=env_name, alias=alias,
                                          detail=postgres.database_comment(conn, name) or "no comment"))
        bundles = store.bundles(config, env_name)  # local, or in the store when backup_dir is a URL
        for old in bundles[:-keep_bundles] if keep_bundles else bundles:
            found.append(Kept(kind="bundle", name=str(old), env=env_name, detail=f"bundle of {env_name}"))
    return found


def cleanup(
    config: Config, items: list[Kept], *, yes: bool = False, typed: str | None = None, log: Log = stderr_log
) -> None:
    """Remove what ``kept`` listed, after asking, per environment (a protected one wants its database's name)."""
    if not items:
        log("nothing to clean up")
        return
    for env_name in dict.fromkeys(item.env for item in items):
        names = ", ".join(item.name for item in items if item.env == env_name)
        runs.confirm(f"Remove {names}?", yes=yes, protected=resolve(config, env_name).protected_name(), typed=typed)
    for item in items:
        if item.kind == "database":
            with postgres.connect(resolve(config, item.env).server(item.alias).with_dbname("postgres")) as conn:
                postgres.drop_database(conn, item.name)
        else:
            store.remove(config, item.name)
        log(f"removed {item.name}")
