#!/usr/bin/env bash
# The "normal procedure" squashkit replaces, steps 1-7, written out as literally as a script can
# be (the source text: /work/shared/seeds/procedure-backup-squash-restore.txt). benchmarks/run.py
# times it beside `squashkit promote --squash`. It deletes migration files and drops a database:
# run it only on a throwaway copy of a project and of its database.
#
# Usage: shell_procedure.sh PROJECT_DIR DATABASE BACKUP_DIR APP [APP ...]
#
# Environment: PYTHON (the project's interpreter; default python3), EXTENSIONS (space-separated
# extensions to create in the recreated database), STEP_LOG (optional: a line
# "<epoch seconds> <step>" is appended before each step and "<epoch seconds> end" after the last),
# and libpq's PGHOST, PGPORT, PGUSER, PGPASSFILE: no password travels on a command line.
#
# Where it departs from the letter of the text, and why:
# - psql, createdb, pg_dump and pg_restore run as $PGUSER with its passfile, not through
#   `su -l postgres -c "PGPASSWORD=$password psql ..."`: a password on a command line shows in ps;
# - the apps are arguments: the text's `find ./ -maxdepth 1 -type d` loop would also pass
#   sample_project's `migration_store` folder, which is no app, and makemigrations would refuse it;
# - `set -euo pipefail`: a step that fails stops the run instead of letting the next one go on;
# - it refuses a project inside a git work tree, to keep the repository's own files safe.
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: $0 PROJECT_DIR DATABASE BACKUP_DIR APP [APP ...]" >&2
  exit 2
fi
project=$1
database=$2
backup_dir=$3
shift 3
apps=("$@")
python=${PYTHON:-python3}
username=${PGUSER:?set PGUSER (and PGHOST, PGPORT, PGPASSFILE)}
step_log=${STEP_LOG:-/dev/null}

if git -C "$project" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "$0: $project is inside a git work tree; this deletes migration files: run it on a throwaway copy" >&2
  exit 2
fi
mkdir -p "$backup_dir"
cd "$project"

step() { echo "$(date +%s.%N) $1" >>"$step_log"; }

# 1. A dumpdata backup, in case it is needed.
step dumpdata
"$python" manage.py dumpdata --exclude auth.permission --exclude contenttypes --exclude admin.LogEntry --exclude sessions --indent 2 > "$backup_dir/db.json"

# 2. The pg_dump backup that is restored below.
step pg_dump
pg_dump -Fc "$database" --exclude-table=django_migrations > "$backup_dir/db.dump"

# 3. Delete the migrations of every application (`-L`: a migrations folder may be a symlink).
step delete_migrations
for dir in $(find -L -name "migrations")
do
rm -Rf $dir/*
done

# 4. Delete and recreate the database, with its extensions.
step recreate_database
psql -X -q -d postgres -c "drop database $database ;"
createdb --owner "$username" "$database"
for extension in ${EXTENSIONS:-}
do
psql -X -q "$database" -c "CREATE EXTENSION $extension ;"
done

# 5. Restore the database from the dump.
step pg_restore
pg_restore -Fc -d "$database" "$backup_dir/db.dump"

# 6. Recreate the migrations.
step makemigrations
"$python" manage.py makemigrations "${apps[@]}"

# 7. Migrate using a fake migration.
step migrate_fake
"$python" manage.py migrate --fake

step end
