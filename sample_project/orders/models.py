from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        SHIPPED = "shipped", "Shipped"
        CANCELLED = "cancelled", "Cancelled"

    # Customer-facing number, e.g. SO-2024-000042; older rows got theirs from
    # migration 0003_populate_order_reference.
    reference = models.CharField(max_length=20, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField()
    note = models.TextField(blank=True)
    # NULL for orders that ship nowhere (digital goods, pick-up in store).
    shipping_address = models.JSONField(null=True, blank=True)
    comments = GenericRelation("community.Comment", related_query_name="order")

    def __str__(self):
        return self.reference


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT, related_name="order_lines")
    quantity = models.PositiveIntegerField(default=1)
    # Copied from the product when ordered: later price changes must not rewrite history.
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        unique_together = [("order", "product")]

    def __str__(self):
        return f"{self.quantity} × {self.product}"
