"""Deterministic organizers, events, extras and tickets (with their extras), inside scopes_disabled()
as the application's own commands run."""

import datetime

from django.core.management.base import BaseCommand
from django.db import transaction
from django_scopes import scopes_disabled

from events.models import Event, Extra, Organizer, Ticket


class Command(BaseCommand):
    help = "Fill the events app: --organizers N, each with two events, three extras and --tickets per event."

    def add_arguments(self, parser):
        parser.add_argument("--organizers", type=int, default=3)
        parser.add_argument("--tickets", type=int, default=20)

    @transaction.atomic
    def handle(self, *args, organizers, tickets, **options):
        start = datetime.datetime(2026, 6, 1, 18, 30, 0, 250000, tzinfo=datetime.timezone.utc)
        with scopes_disabled():
            for o in range(organizers):
                organizer = Organizer.objects.create(name=f"Organizer {o}", slug=f"org-{o}")
                for e in range(2):
                    event = Event.objects.create(organizer=organizer, slug=f"conf-{e}", name=f"Conference {o}.{e}",
                                                 starts_at=start + datetime.timedelta(days=7 * e + o))
                    extras = [Extra.objects.create(event=event, name=name) for name in ("T-shirt", "Dinner", "Parking")]
                    for t in range(tickets):
                        ticket = Ticket.objects.create(event=event, code=f"{o}{e}-{t:05d}", holder=f"Guest {o}.{e}.{t}",
                                                       seats=[f"R{t % 7}", f"S{t}"][: t % 3])
                        ticket.extras.set(extras[: t % 4])
