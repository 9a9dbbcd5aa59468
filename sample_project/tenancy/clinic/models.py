from django.conf import settings
from django.db import models


class Species(models.Model):
    """A lookup table its second migration (a RunPython) fills in every tenant."""

    code = models.CharField(max_length=10, unique=True)
    label = models.CharField(max_length=50)


class Patient(models.Model):
    full_name = models.CharField(max_length=100)  # ``name`` until the third migration (a RenameField)
    species = models.ForeignKey(Species, on_delete=models.PROTECT)
    # Into public: auth is a shared app, so the constraint references public.auth_user.
    vet = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    born = models.DateField(null=True)
    weight = models.DecimalField(max_digits=6, decimal_places=2, null=True)


class Visit(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="visits")
    at = models.DateTimeField()
    notes = models.TextField(blank=True)
