"""An index page under the home page (SAMPLE_PAGETREE=1, squashkit's tests/test_freshdata.py).

``IndexPage`` inherits from the third-party ``pagetree.Page`` too; ``0002`` creates one under the
home page ``home/0002`` made (its parent row is the home page's row). Its models never changed
since, so a squash carries ``0002`` as code, and a fresh build of the new files runs it: there,
before the home page exists, it finds the welcome page instead.
"""

from django.db import models
from pagetree.models import Page


class IndexPage(Page):
    heading = models.CharField(max_length=100)
