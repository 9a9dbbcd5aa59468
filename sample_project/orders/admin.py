from django.contrib import admin

from orders.models import Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    raw_id_fields = ["product"]
    extra = 0


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["reference", "user", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["reference", "user__username"]
    raw_id_fields = ["user"]
    inlines = [OrderLineInline]
