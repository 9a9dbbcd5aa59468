"""One environment, resolved: its config, its ``manage.py``, what the project is under its settings.

Every command starts by resolving the environments it acts on; the rest of squashkit asks the
``Target`` for connections rather than reading settings itself.
"""

from __future__ import annotations

from pydantic import BaseModel

from squashkit import postgres, tenants
from squashkit.config import Config, Environment
from squashkit.project import ManagePy, ProjectInfo, declare_own, introspect, manage_py


class Target(BaseModel):
    """One environment, resolved: its manage.py, its project facts, its connections."""

    name: str
    environment: Environment
    manage: ManagePy
    project: ProjectInfo

    def params(self, alias: str = "default") -> postgres.ConnectionParams:
        """How the project itself reaches ``alias`` (its settings' user, host and database); for a
        django-tenants project, ``alias@schema`` reaches one schema (alone on the search_path)."""
        if alias not in self.project.databases and tenants.SEPARATOR in alias:
            name, schema = alias.split(tenants.SEPARATOR, 1)
            return tenants.in_schema(self.project.connection(name), schema)
        return self.project.connection(alias)

    def admin(self) -> postgres.ConnectionParams | None:
        """The environment's superuser connection, when the config names one."""
        admin = self.environment.admin
        return admin.params(self.params()) if admin else None

    def server(self, alias: str) -> postgres.ConnectionParams:
        """Who creates, renames and drops databases on ``alias``'s server: the admin connection when
        there is one, else the project's user."""
        return self.admin() or self.params(alias)

    def protected_name(self) -> str | None:
        """The database name a destructive command wants typed (``protected = true``), else None."""
        return self.params().dbname if self.environment.protected else None


def resolve(config: Config, env: str | None) -> Target:
    """The environment's manage.py and what the project is under its settings (one ``manage.py`` run)."""
    name, environment = config.environment(env)
    manage = manage_py(config, name, environment)
    return Target(name=name, environment=environment, manage=manage,
                  project=declare_own(introspect(manage), config.project_apps))
