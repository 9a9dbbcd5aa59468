from django.db import migrations


def create_homepage(apps, schema_editor):
    """Replace the welcome page with the site's home page, as ``wagtail start`` writes it."""
    alias = schema_editor.connection.alias
    Page = apps.get_model("pagetree", "Page")
    HomePage = apps.get_model("home", "HomePage")
    Page.objects.using(alias).filter(slug="home", parent__parent=None).delete()
    root = Page.objects.using(alias).get(parent=None)
    HomePage.objects.using(alias).create(title="Home", slug="home", parent=root)
    Page.objects.using(alias).filter(pk=root.pk).update(title="Site root")


class Migration(migrations.Migration):

    dependencies = [
        ('home', '0001_initial'),
        ('pagetree', '0002_initial_data'),
    ]

    operations = [
        migrations.RunPython(create_homepage, migrations.RunPython.noop),
    ]
