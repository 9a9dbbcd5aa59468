"""The home page (SAMPLE_PAGETREE=1, squashkit's tests/test_freshdata.py), as a wagtail site has it.

``HomePage`` inherits from the third-party ``pagetree.Page`` (multi-table inheritance:
``home_homepage.page_ptr_id`` points at ``pagetree_page``). ``0002`` deletes the welcome page,
creates the home page in its place and renames the root: a delete, an insert and an update of
the parent table; ``0003`` adds a field after it, so ``0002`` is written against older models.
"""

from django.db import models
from pagetree.models import Page


class HomePage(Page):
    intro = models.CharField(max_length=200, default="", blank=True)
