from django.db import migrations


def create_index(apps, schema_editor):
    """The library's index page, under the home page."""
    alias = schema_editor.connection.alias
    Page = apps.get_model("pagetree", "Page")
    IndexPage = apps.get_model("library", "IndexPage")
    home = Page.objects.using(alias).get(slug="home", parent__parent=None)
    IndexPage.objects.using(alias).create(title="Library", slug="library", parent=home, heading="Books")
    Page.objects.using(alias).filter(pk=home.pk).update(numchild=1)


class Migration(migrations.Migration):

    dependencies = [
        ('library', '0001_initial'),
        ('home', '0002_create_homepage'),
    ]

    operations = [
        migrations.RunPython(create_index, migrations.RunPython.noop),
    ]
