"""Demo data for oscar beyond the catalogue its importer loaded: customers with addresses, an
offer on a range with a voucher, reviews, wishlists, baskets, and orders with lines, events and
notes (through oscar's models, loaded with get_model as oscar's own code does)."""
import random
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.sites.models import Site
from django.utils import timezone
from oscar.core.loading import get_class, get_model

random.seed(7)
Selector = get_class("partner.strategy", "Selector")
Product = get_model("catalogue", "Product")
Country = get_model("address", "Country")
UserAddress = get_model("address", "UserAddress")
Range = get_model("offer", "Range")
Condition = get_model("offer", "Condition")
Benefit = get_model("offer", "Benefit")
ConditionalOffer = get_model("offer", "ConditionalOffer")
Voucher = get_model("voucher", "Voucher")
ProductReview = get_model("reviews", "ProductReview")
WishList = get_model("wishlists", "WishList")
Basket = get_model("basket", "Basket")
Order = get_model("order", "Order")
Line = get_model("order", "Line")
ShippingAddress = get_model("order", "ShippingAddress")
OrderNote = get_model("order", "OrderNote")
CommunicationEventType = get_model("communication", "CommunicationEventType")

User = get_user_model()
User.objects.create_superuser("admin", "admin@example.com", "x")
country = Country.objects.get(iso_3166_1_a2="GB")
country.is_shipping_country = True
country.save()
products = list(Product.objects.filter(structure="standalone").order_by("id"))
customers = []
for i in range(10):
    user = User.objects.create_user(f"customer{i}", f"customer{i}@example.com", "x", first_name=f"C{i}", last_name="Buyer")
    customers.append(user)
    UserAddress.objects.create(user=user, first_name=f"C{i}", last_name="Buyer", line1=f"{i} High Street", line4="London",
                               postcode="SW1A 1AA", country=country, is_default_for_shipping=True)

fiction = Range.objects.create(name="Fiction", includes_all_products=False)
for product in products[:10]:
    fiction.add_product(product)
condition = Condition.objects.create(range=fiction, type=Condition.COUNT, value=2)
benefit = Benefit.objects.create(range=fiction, type=Benefit.PERCENTAGE, value=10)
offer = ConditionalOffer.objects.create(name="Two fiction books, 10% off", offer_type=ConditionalOffer.SITE,
                                        condition=condition, benefit=benefit)
voucher_offer = ConditionalOffer.objects.create(name="Voucher offer", offer_type=ConditionalOffer.VOUCHER,
                                                condition=Condition.objects.create(range=fiction, type=Condition.COUNT, value=1),
                                                benefit=Benefit.objects.create(range=fiction, type=Benefit.FIXED, value=5))
voucher = Voucher.objects.create(name="Five off", code="FIVEOFF", start_datetime=timezone.now() - timedelta(days=1),
                                 end_datetime=timezone.now() + timedelta(days=30))
voucher.offers.add(voucher_offer)
CommunicationEventType.objects.create(code="ORDER_PLACED", name="Order placed", email_subject_template="Order {{ order.number }}")

for i, user in enumerate(customers):
    product = products[i]
    ProductReview.objects.create(product=product, user=user, score=random.randint(1, 5), title=f"Review {i}", body="Fine.",
                                 status=ProductReview.APPROVED)
    wishlist = WishList.objects.create(owner=user, name="Later")
    wishlist.add(products[-1 - i])
    basket = Basket.objects.create(owner=user, status="Open")
    basket.strategy = Selector().strategy()
    basket.add_product(products[(i + 5) % len(products)], quantity=2)

site = Site.objects.get_current()
for n in range(15):
    user = customers[n % len(customers)]
    address = ShippingAddress.objects.create(first_name=user.first_name, last_name="Buyer", line1="1 High Street",
                                             line4="London", postcode="SW1A 1AA", country=country)
    chosen = random.sample(products, 3)
    total = Decimal("0")
    order = Order.objects.create(number=f"{100000 + n}", site=site, user=user, currency="GBP", shipping_address=address,
                                 total_incl_tax=0, total_excl_tax=0, shipping_incl_tax=Decimal("2.99"),
                                 shipping_excl_tax=Decimal("2.49"), shipping_method="Standard", shipping_code="standard",
                                 status=random.choice(["Pending", "Being processed", "Complete"]),
                                 date_placed=timezone.now() - timedelta(days=n))
    for product in chosen:
        record = product.stockrecords.first()
        quantity = random.randint(1, 3)
        price = record.price * quantity
        total += price
        Line.objects.create(order=order, partner=record.partner, partner_name=record.partner.name,
                            partner_sku=record.partner_sku, stockrecord=record, product=product, title=product.title,
                            upc=product.upc, quantity=quantity, line_price_incl_tax=price, line_price_excl_tax=price,
                            line_price_before_discounts_incl_tax=price, line_price_before_discounts_excl_tax=price,
                            unit_price_incl_tax=record.price, unit_price_excl_tax=record.price, num_allocated=quantity)
    order.total_incl_tax = order.total_excl_tax = total + Decimal("2.99")
    order.save()
    OrderNote.objects.create(order=order, user=user, note_type="Info", message=f"Seeded order {n}")
print("seeded", Order.objects.count(), "orders,", Product.objects.count(), "products")
