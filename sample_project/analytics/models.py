from django.db import models


class PageView(models.Model):
    # A plain integer, not a ForeignKey: this table may live in another database.
    product_id = models.IntegerField(db_index=True)
    path = models.CharField(max_length=500)
    session_key = models.CharField(max_length=40)
    referrer = models.URLField(max_length=500, null=True, blank=True)
    viewed_at = models.DateTimeField()

    def __str__(self):
        return f"{self.path} at {self.viewed_at:%Y-%m-%d %H:%M}"
