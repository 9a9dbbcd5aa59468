from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models


class ShippingMethod(models.Model):
    """How an order travels. Migration 0007 creates the first three; staff edit them later."""

    code = models.SlugField(max_length=20, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    # Orders placed after this time of day leave the next day; NULL for no cut-off.
    cutoff_time = models.TimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    def __str__(self):
        return self.name


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
    # NULL for orders placed before shipping methods existed, and for digital goods.
    shipping_method = models.ForeignKey(
        ShippingMethod,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="orders",
    )
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
