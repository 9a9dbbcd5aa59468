"""``squashkit check``'s fresh-data finding: does a fresh build of the current migration files hold
the rows a fresh build of the old history held, as the last squash recorded it in its bundle?

A squash proves it once (``freshproof``); a data migration edited, deleted or added since shows
here without a squash. The current files' build is taken from the cache (``freshdata``: the
squash kept the build of its new files) or made now, once, and kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pydantic import ValidationError

from squashkit import freshdata, postgres, scratch, scratch_cache
from squashkit.config import Config
from squashkit.databases import Database
from squashkit.postgres import ConnectionParams
from squashkit.project import ManagePy, ProjectInfo

RECORD = "fresh_data.json"  # written by freshproof into the squash's bundle
Add = Callable[[str, str, str], None]


def check_fresh_data(config: Config, manage: ManagePy, project: ProjectInfo, database: Database, params: ConnectionParams,
                     admin: ConnectionParams | None, add: Add) -> None:
    alias = database.alias
    name = f"fresh data ({', '.join(database.aliases)})"
    records = sorted(config.backup_dir.glob(f"*/{RECORD}"), key=lambda p: p.stat().st_mtime)
    recorded = None
    for path in reversed(records):
        try:
            entry = json.loads(path.read_text()).get(alias)
            recorded = freshdata.CachedData.model_validate(entry) if entry else None
        except (OSError, ValueError, ValidationError):
            continue
        if recorded is not None:
            break
    if recorded is None:
        return  # no squash recorded the old history's rows: nothing to hold the files to
    digest, files = scratch_cache.key(manage, project, database, params, config.extensions)
    current = freshdata.load(config.backup_dir, digest)
    how = current.describe() if current else ""
    if current is None:
        started = time.monotonic()
        with scratch.empty(database, params, admin=admin, extensions=config.extensions) as names:
            scratch.migrate(manage, project, database, names)
            with postgres.connect(params.with_dbname(names[alias])) as conn:
                data = freshdata.snapshot(conn)
        current = freshdata.entry(digest, alias, "check", time.monotonic() - started, files, data)
        freshdata.save(config.backup_dir, current)
        how = f"scratch migrate, {current.seconds:.1f} s"
    diff = freshdata.compare(recorded.data, current.data, recorded.volatile)
    if diff.empty():
        add(name, "ok", f"a fresh build of the migration files holds the {recorded.data.count()} rows a fresh build of the "
            f"history held when it was last squashed ({how})")
    else:
        add(name, "warn", f"a fresh build of the migration files differs from the history's, as the last squash recorded "
            f"it ({diff.summary()}; {how}): a data migration changed since? a squash carries the difference as data")
