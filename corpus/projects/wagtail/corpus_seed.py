"""A page tree under the site's HomePage, through wagtail's own API: 4 sections of 6 pages, each
with 2 children, some saved as several revisions, some left as drafts; collections, a user, a
redirect, a second site."""
from django.contrib.auth import get_user_model
from home.models import HomePage
from wagtail.contrib.redirects.models import Redirect
from wagtail.models import Collection, Page, Site

editor = get_user_model().objects.create_superuser("editor", "editor@example.com", "x")
home = HomePage.objects.get(depth=2)
count = 0
for s in range(4):
    section = home.add_child(instance=HomePage(title=f"Section {s}", slug=f"section-{s}"))
    section.save_revision(user=editor).publish()
    for p in range(6):
        page = section.add_child(instance=HomePage(title=f"Page {s}.{p}", slug=f"page-{p}", live=p % 3 != 0))
        for r in range(1 + p % 3):
            page.title = f"Page {s}.{p} (revision {r})"
            revision = page.save_revision(user=editor)
        if page.live:
            revision.publish()
        for c in range(2):
            child = page.add_child(instance=HomePage(title=f"Leaf {s}.{p}.{c}", slug=f"leaf-{c}"))
            child.save_revision(user=editor).publish()
            count += 1
        count += 1
root_collection = Collection.get_first_root_node()
for c in range(3):
    root_collection.add_child(name=f"Collection {c}")
Redirect.objects.create(old_path="/old-home", redirect_page=home)
Site.objects.create(hostname="other.example.com", port=80, root_page=Page.objects.get(slug="section-0"), site_name="Other")
print("seeded", count, "pages,", Page.objects.count(), "in all")
