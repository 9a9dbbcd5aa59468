"""Demo data for django-helpdesk: staff and customers, queues, tickets with follow-ups and
changes, a knowledge base, saved searches, pre-set replies, ignored emails."""
import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from helpdesk.models import (
    CustomField, FollowUp, IgnoreEmail, KBCategory, KBItem, PreSetReply, Queue, SavedSearch, Ticket, TicketCC,
    TicketChange, TicketCustomFieldValue,
)

random.seed(21)
User = get_user_model()
staff = [User.objects.create_user(f"agent{i}", f"agent{i}@example.com", "x", is_staff=True) for i in range(4)]
User.objects.create_superuser("admin", "admin@example.com", "x")
start = timezone.now() - timedelta(days=60)
field = CustomField.objects.create(name="product", label="Product", data_type="varchar", max_length=40, ordering=1)
for q in range(3):
    queue = Queue.objects.create(title=f"Queue {q}", slug=f"queue-{q}", email_address=f"q{q}@example.com")
    for t in range(25):
        ticket = Ticket.objects.create(
            title=f"Ticket {q}-{t}", queue=queue, submitter_email=f"customer{t}@example.com",
            assigned_to=random.choice(staff), status=random.choice([1, 2, 3, 4]), priority=random.randint(1, 5),
            description=f"Something is broken ({q}-{t})", created=start + timedelta(hours=q * 100 + t),
        )
        TicketCustomFieldValue.objects.create(ticket=ticket, field=field, value=f"widget-{t % 4}")
        if t % 5 == 0:
            TicketCC.objects.create(ticket=ticket, email=f"cc{t}@example.com", can_view=True)
        for f in range(random.randint(1, 4)):
            follow = FollowUp.objects.create(ticket=ticket, title=f"Reply {f}", comment=f"Comment {f} on {ticket.title}",
                                             public=f % 2 == 0, user=random.choice(staff), date=ticket.created + timedelta(hours=f + 1))
            if f == 0:
                TicketChange.objects.create(followup=follow, field="Status", old_value="Open", new_value="Resolved")
for c in range(3):
    category = KBCategory.objects.create(name=f"Category {c}", title=f"Category {c}", slug=f"cat-{c}", description="About it")
    for i in range(6):
        KBItem.objects.create(category=category, title=f"How to {c}-{i}", question=f"How do I {i}?", answer="Like this.", order=i)
PreSetReply.objects.create(name="Thanks", body="Thank you for your ticket.")
IgnoreEmail.objects.create(name="No spam", email_address="*@spam.example.com", keep_in_mailbox=False)
SavedSearch.objects.create(user=staff[0], title="Mine", shared=True, query="e30=")
print("seeded", Ticket.objects.count(), "tickets")
