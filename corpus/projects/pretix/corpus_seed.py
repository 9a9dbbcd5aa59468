"""Demo data for pretix through its models (inside django-scopes' scopes_disabled, as its own
commands do): an admin user and team, two organizers with two events each, categories, products
with variations, quotas, questions, vouchers, and orders with positions, payments and answers."""
import os
import random
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils.timezone import now
from django_scopes import scopes_disabled
from pretix.base.models import (
    Event, Item, ItemCategory, Order, OrderPayment, OrderPosition, Organizer, Question, QuestionAnswer, Quota, Team, User,
    Voucher,
)

random.seed(11)
with scopes_disabled(), transaction.atomic():
    admin = User.objects.create_superuser(os.environ.get("CORPUS_SEED_ADMIN", "admin@example.com"), "x")
    for o in range(2):
        organizer = Organizer.objects.create(name=f"Organizer {o}", slug=f"org{o}")
        team = Team.objects.create(organizer=organizer, name="Admins", all_events=True)
        team.members.add(admin)
        channel = organizer.sales_channels.get(identifier="web")
        for e in range(2):
            event = Event.objects.create(organizer=organizer, name=f"Conference {o}.{e}", slug=f"conf{e}", currency="EUR",
                                         date_from=now() + timedelta(days=30 + e), live=True)
            event.set_defaults()
            category = ItemCategory.objects.create(event=event, name="Tickets", position=0)
            ticket = Item.objects.create(event=event, category=category, name="Ticket", default_price=Decimal("42.00"))
            shirt = Item.objects.create(event=event, category=category, name="Shirt", default_price=Decimal("15.00"))
            sizes = [shirt.variations.create(value=size, default_price=Decimal("15.00")) for size in ("S", "M", "L")]
            quota = Quota.objects.create(event=event, name="All", size=200)
            quota.items.add(ticket, shirt)
            quota.variations.add(*sizes)
            question = Question.objects.create(event=event, question="Company?", type=Question.TYPE_STRING, required=False)
            question.items.add(ticket)
            Voucher.objects.create(event=event, code=f"FREE{o}{e}", item=ticket, price_mode="set", value=Decimal("0"))
            for n in range(12):
                status = random.choice([Order.STATUS_PAID, Order.STATUS_PENDING, Order.STATUS_CANCELED])
                order = Order.objects.create(event=event, email=f"buyer{n}@example.com", status=status, datetime=now(),
                                             expires=now() + timedelta(days=10), total=Decimal("0"), locale="en",
                                             sales_channel=channel)
                total = Decimal("0")
                for p in range(random.randint(1, 3)):
                    variation = random.choice(sizes) if p else None
                    item = shirt if variation else ticket
                    price = item.default_price
                    position = OrderPosition.objects.create(order=order, item=item, variation=variation, price=price,
                                                            positionid=p + 1, attendee_name_parts={"full_name": f"A {n}.{p}"})
                    if item == ticket:
                        QuestionAnswer.objects.create(orderposition=position, question=question, answer=f"Firm {n}")
                    total += price
                order.total = total
                order.save()
                order.create_transactions()
                if status == Order.STATUS_PAID:
                    OrderPayment.objects.create(order=order, amount=total, provider="manual", state=OrderPayment.PAYMENT_STATE_CONFIRMED,
                                                payment_date=now())
    print("seeded", Order.objects.count(), "orders")
    if os.environ.get("CORPUS_SEED_DRY"):
        transaction.set_rollback(True)
