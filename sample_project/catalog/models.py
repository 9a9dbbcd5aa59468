from django.contrib.contenttypes.fields import GenericRelation
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="children",
    )

    class Meta:
        verbose_name_plural = "categories"
        constraints = [
            models.UniqueConstraint(fields=["parent", "name"], name="catalog_category_unique_name_per_parent"),
        ]

    def __str__(self):
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)

    def __str__(self):
        return self.name


class Product(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    tags = models.ManyToManyField(Tag, blank=True, related_name="products")
    attributes = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    # Bulky goods travel one way only; NULL lets the customer choose. orders points back
    # at catalog (OrderLine.product), so the two apps' migrations depend on each other.
    shipping_method = models.ForeignKey(
        "orders.ShippingMethod",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="products",
    )
    comments = GenericRelation("community.Comment", related_query_name="product")

    class Meta:
        indexes = [
            # Serves the shop's fuzzy search: name__trigram_similar and icontains.
            GinIndex(fields=["name"], opclasses=["gin_trgm_ops"], name="catalog_product_name_trgm"),
        ]

    def __str__(self):
        return self.name


class ActiveProduct(Product):
    """The products on sale: a proxy, so it has no table and no rows of its own."""

    class Meta:
        proxy = True


class ProductStats(models.Model):
    """Per-product figures read from the ``catalog_productstats`` SQL view (migration 0008).

    Unmanaged: Django neither creates nor alters it, and nothing can be saved into it
    (the view aggregates, so PostgreSQL refuses inserts).
    """

    product = models.OneToOneField(
        Product,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_column="product_id",
        related_name="stats",
    )
    tag_count = models.IntegerField()

    class Meta:
        managed = False
        db_table = "catalog_productstats"
        verbose_name_plural = "product stats"

    def __str__(self):
        return f"{self.product_id}: {self.tag_count} tags"
