from django.contrib import admin

from community.models import ActivityLog, Comment, Review


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["product", "author", "rating", "created_at"]
    list_filter = ["rating"]
    raw_id_fields = ["product", "author"]


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["content_type", "object_id", "author", "is_public", "created_at"]
    list_filter = ["is_public", "content_type"]
    raw_id_fields = ["author"]


@admin.register(ActivityLog)
class ActivityLogAdmin(admin.ModelAdmin):
    list_display = ["action", "user_id", "ip_address", "created_at"]
    list_filter = ["action"]
    # A raw id, because the user may no longer exist.
    raw_id_fields = ["user"]
