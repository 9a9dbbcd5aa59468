from django.contrib import admin

from analytics.models import PageView


@admin.register(PageView)
class PageViewAdmin(admin.ModelAdmin):
    list_display = ["path", "product_id", "viewed_at"]
