"""The corpus: third-party Django projects, each a recipe of pinned packages from PyPI, the files
we add (settings overrides, a manage.py where the project has none at its root, a seeding script),
and the commands that build and seed it. No third-party code lives in this repository: the
harness downloads it, pinned, on every fresh machine.

Two shapes of project:

- **a site built on a framework** (``wagtail``): the framework stays in the virtualenv's
  site-packages, the site's own apps are the project's own, as for any user of it;
- **the application itself** (``pretix``, ``oscar``, ``cms``, ``helpdesk``, ``boundaries``):
  its pinned distribution is unpacked into the project directory (``own_dist``) and put first on
  the virtualenv's path, the way its developers work on it, so squashkit treats its apps (and
  their long migration histories) as the project's own and a squash regenerates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PSYCOPG = "psycopg[binary]==3.3.9"


@dataclass(frozen=True)
class Project:
    name: str
    what: str
    requirements: list[str]
    settings: str
    manage_py: str = "manage.py"
    own_dist: str | None = None  # "pkg==version": downloaded and unpacked into the project directory
    own_packages: list[str] = field(default_factory=list)  # its top-level packages copied into the project directory
    create: list[list[str]] = field(default_factory=list)  # argv run in the project directory first ({venv}, {python})
    prepare: list[list[str]] = field(default_factory=list)  # argv run once its files are in place, before the first commit
    seed: list[list[str]] = field(default_factory=list)  # argv run after migrate, on dev
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 1800  # seconds, per command

    def key(self) -> list[str]:
        """What the cached virtualenv depends on."""
        return [*self.requirements, f"own:{self.own_dist}"]


MANAGE = ["{python}", "manage.py"]

PROJECTS: dict[str, Project] = {
    p.name: p
    for p in [
        Project(
            name="helpdesk",
            what="django-helpdesk 2.6.1, a ticket tracker: 43 migrations with data migrations (populate, depickle, "
            "queue membership moves); seeded with queues, tickets, follow-ups, KB items",
            requirements=["django-helpdesk==2.6.1", PSYCOPG],
            own_dist="django-helpdesk==2.6.1",
            own_packages=["helpdesk"],
            settings="corpus_settings",
            seed=[[*MANAGE, "shell", "-c", "import runpy; runpy.run_path('corpus_seed.py')"]],
        ),
        Project(
            name="wagtail",
            what="a wagtail 8.0.1 site made by `wagtail start` (its home app replaces the welcome page with a "
            "HomePage in a data migration), a page tree of 3 levels seeded through wagtail's API with revisions",
            requirements=["wagtail==8.0.1", PSYCOPG],
            settings="corpus_settings",
            create=[["{venv}/bin/wagtail", "start", "corpussite", "."]],
            seed=[[*MANAGE, "shell", "-c", "import runpy; runpy.run_path('corpus_seed.py')"]],
        ),
        Project(
            name="boundaries",
            what="represent-boundaries 0.10.2, a GeoDjango application (MultiPolygon, Point, PostGIS): "
            "seeded the way its docs say, `loadshapefiles` from a shapefile (made here with ogr2ogr)",
            requirements=["represent-boundaries==0.10.2", "Django==4.2.30", PSYCOPG],  # it uses OSMGeoAdmin, gone in Django 5
            own_dist="represent-boundaries==0.10.2",
            own_packages=["boundaries"],
            settings="corpus_settings",
            seed=[["sh", "corpus_seed.sh", "{python}"]],
        ),
        Project(
            name="oscar",
            what="django-oscar 4.2.1, the e-commerce framework, set up as its docs' 'Building your own shop' "
            "says, seeded with its own commands (oscar_populate_countries, oscar_import_catalogue) and orders",
            requirements=["django-oscar[sorl-thumbnail]==4.2.1", "pycountry==26.2.16", PSYCOPG],
            own_dist="django-oscar==4.2.1",
            own_packages=["oscar"],
            settings="corpus_settings",
            seed=[
                [*MANAGE, "oscar_populate_countries", "--initial-only"],
                [*MANAGE, "oscar_import_catalogue", "corpus_catalogue.csv"],
                [*MANAGE, "shell", "-c", "import runpy; runpy.run_path('corpus_seed.py')"],
            ],
        ),
        Project(
            name="cms",
            what="django CMS 5.1.3 with djangocms-text, pages and plugins seeded through cms.api",
            requirements=["django-cms==5.1.3", "djangocms-text==1.0.2", "djangocms-admin-style==3.3.1", PSYCOPG],
            own_dist="django-cms==5.1.3",
            own_packages=["cms", "menus"],
            settings="corpus_settings",
            seed=[[*MANAGE, "shell", "-c", "import runpy; runpy.run_path('corpus_seed.py')"]],
        ),
        Project(
            name="pretix",
            what="pretix 2026.8.0, a ticket shop: 431 migration files in 21 apps, PostgreSQL only; its entry "
            "point is `python -m pretix` (no manage.py: squashkit runs pretix/__main__.py); seeded with an "
            "organizer, events, products, quotas and orders",
            requirements=["pretix==2026.8.0"],
            own_dist="pretix==2026.8.0",
            own_packages=["pretix"],
            manage_py="pretix/__main__.py",
            settings="corpus_settings",
            # pretix 2026.8.0's models have changes its migrations lack (two locale max_lengths, a
            # OneToOneField): as its developers would, its own makemigrations writes them first.
            prepare=[["{python}", "-m", "pretix", "makemigrations"]],
            seed=[["{python}", "-m", "pretix", "shell", "-c", "import runpy; runpy.run_path('corpus_seed.py')"]],
            timeout=3600,
        ),
    ]
}
