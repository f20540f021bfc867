"""The demo shop's data: a small outdoor-and-kitchen catalog and three days of shoppers.

Pure code, no I/O, deterministic: the same catalog and the same history on every call
(random.Random with fixed seeds). `recsrv demo` loads `catalog_events(now)` and
`history(now)` through the normal event path, so the demo page at /demo starts with a
model that already knows which products go together.

The history is made coherent on purpose, so that similarity means something. Each
category has a shopping path (tent → sleeping bag → sleeping pad → stove …): a
shopper compares a few variants of one kind of product, often clicks one, sometimes
carts it, then usually moves on along the path, now and then to a complementary
category (camping → hiking; coffee → tea or kitchen), and buys what is in the cart at
the end of some sessions. Within a kind, some variants are much more popular than
others, and signed-in shoppers return to their favourite categories.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Final

HISTORY_DAYS: Final = 3
SESSIONS: Final = 3000
USERS: Final = 500
SIGNED_IN_SHARE: Final = 0.35
TITLE_SEPARATOR: Final = " \N{EN DASH} "  # between a kind and its variant
CATALOG_SEED: Final = 20240611
HISTORY_SEED: Final = 7


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of product in a category, sold in several variants."""

    name: str  # "Trail running shoe"
    price: float  # typical price of a variant
    variants: tuple[str, ...]  # "blue", "2-person", …


@dataclass(frozen=True, slots=True)
class Category:
    """A category: its kinds in shopping-path order, and where shoppers go next."""

    name: str
    kinds: tuple[Kind, ...]
    # Complementary categories, each with the kind a shopper arriving from here starts
    # at (None: the first kind of its path).
    next: tuple[tuple[str, str | None], ...]


def _kind(name: str, price: float, variants: str) -> Kind:
    return Kind(name, price, tuple(v.strip() for v in variants.split(",")))


COLOURS: Final = "blue, red, black, green, orange"

CATEGORIES: Final = (
    Category(
        "running",
        (
            _kind("Trail running shoe", 129, COLOURS),
            _kind("Road running shoe", 119, "blue, white, black, coral, lime"),
            _kind("Running socks", 14, "3-pack, merino, compression, no-show"),
            _kind("Running shorts", 39, "black, navy, grey, red"),
            _kind("GPS running watch", 249, "basic, pro, solar"),
            _kind("Hydration vest", 89, "5 l, 8 l, 12 l"),
        ),
        (("cycling", None), ("yoga", None), ("books", "Running training plan")),
    ),
    Category(
        "camping",
        (
            _kind("Tent", 189, "1-person, 2-person, 3-person, 4-person, ultralight"),
            _kind("Sleeping bag", 129, "summer, 3-season, winter, down, kids"),
            _kind("Sleeping pad", 69, "foam, self-inflating, insulated, ultralight"),
            _kind("Camping stove", 59, "gas, multi-fuel, compact, twin-burner"),
            _kind("Headlamp", 35, "200 lm, 400 lm, rechargeable, red-light"),
            _kind("Camp mug", 19, "enamel, titanium, insulated"),
        ),
        (("hiking", None), ("books", "Trail guide")),
    ),
    Category(
        "hiking",
        (
            _kind("Hiking boot", 159, "brown, grey, waterproof, lightweight, wide fit"),
            _kind("Daypack", 79, "20 l, 25 l, 30 l, 35 l"),
            _kind("Trekking poles", 69, "aluminium, carbon, folding"),
            _kind("Rain jacket", 139, "yellow, navy, black, green"),
            _kind("Water filter", 45, "bottle, squeeze, pump"),
            _kind("Trail map", 12, "Alps, Dolomites, Pyrenees, Highlands"),
        ),
        (("camping", None), ("running", "Trail running shoe"), ("books", "Trail guide")),
    ),
    Category(
        "cycling",
        (
            _kind("Bike helmet", 79, "white, black, matte blue, neon"),
            _kind("Bike light set", 39, "USB, 800 lm, dynamo"),
            _kind("Bike lock", 49, "D-lock, chain, folding"),
            _kind("Cycling jersey", 69, "red, blue, black, yellow"),
            _kind("Bike bottle", 9, "500 ml, 750 ml, insulated"),
            _kind("Saddle bag", 29, "small, medium, waterproof"),
        ),
        (("running", None), ("hiking", "Daypack")),
    ),
    Category(
        "yoga",
        (
            _kind("Yoga mat", 49, "purple, teal, cork, travel, extra thick"),
            _kind("Yoga block", 15, "cork, foam, bamboo"),
            _kind("Yoga strap", 12, "grey, plum, sand"),
            _kind("Yoga leggings", 59, "black, navy, olive, berry"),
            _kind("Meditation cushion", 45, "round, crescent, buckwheat"),
        ),
        (("tea", None), ("running", "Running socks"), ("books", "Novel")),
    ),
    Category(
        "kitchen",
        (
            _kind("Frying pan", 49, "24 cm, 28 cm, cast iron, non-stick"),
            _kind("Chef's knife", 79, "16 cm, 20 cm, santoku, paring"),
            _kind("Cutting board", 35, "oak, walnut, bamboo"),
            _kind("Kettle", 59, "steel, gooseneck, glass"),
            _kind("Mixing bowls", 29, "steel, ceramic, glass"),
            _kind("Apron", 24, "denim, linen, canvas"),
        ),
        (("coffee", None), ("garden", "Herb seed packet"), ("books", "Cookbook")),
    ),
    Category(
        "coffee",
        (
            _kind("Coffee grinder", 89, "hand, burr, electric, travel"),
            _kind(
                "Coffee beans",
                14,
                "Ethiopia, Colombia, Brazil, Kenya, Guatemala, house blend, decaf",
            ),
            _kind("Pour-over dripper", 29, "ceramic, glass, plastic, copper"),
            _kind("Paper filters", 6, "size 2, size 4, unbleached"),
            _kind("Coffee mug", 16, "white, speckled, black, double-wall"),
            _kind("Milk frother", 39, "handheld, electric, stovetop"),
        ),
        (("tea", None), ("kitchen", "Kettle"), ("books", "Coffee atlas")),
    ),
    Category(
        "tea",
        (
            _kind("Loose-leaf tea", 11, "sencha, Earl Grey, oolong, rooibos, chai, jasmine"),
            _kind("Teapot", 39, "cast iron, glass, ceramic"),
            _kind("Tea infuser", 9, "basket, ball, bottle"),
            _kind("Tea cup", 14, "porcelain, glass, stoneware"),
            _kind("Honey jar", 12, "acacia, wildflower, manuka"),
        ),
        (("coffee", "Coffee mug"), ("yoga", "Meditation cushion"), ("books", "Novel")),
    ),
    Category(
        "books",
        (
            _kind("Novel", 18, "mystery, sea story, mountain memoir, short stories"),
            _kind("Cookbook", 29, "weeknight, baking, vegetables, camp cooking"),
            _kind("Trail guide", 24, "Alps, Dolomites, Pyrenees, Highlands"),
            _kind("Running training plan", 22, "5 k, 10 k, half marathon, marathon"),
            _kind("Coffee atlas", 35, "world, home barista"),
            _kind("Garden handbook", 27, "vegetables, balcony, herbs"),
        ),
        (("coffee", None), ("tea", None)),
    ),
    Category(
        "garden",
        (
            _kind("Herb seed packet", 4, "basil, parsley, chives, mint, coriander"),
            _kind("Plant pot", 19, "terracotta, glazed, self-watering"),
            _kind("Gardening gloves", 15, "small, medium, large"),
            _kind("Watering can", 25, "5 l, 10 l, brass"),
            _kind("Pruning shears", 32, "bypass, anvil, mini"),
            _kind("Compost bin", 69, "small, large, worm"),
        ),
        (("kitchen", None), ("books", "Garden handbook")),
    ),
)
_BY_NAME: Final = {category.name: category for category in CATEGORIES}
# How often a session starts in each category: some are busier than others.
TRAFFIC: Final = {
    "running": 5,
    "camping": 6,
    "hiking": 4,
    "cycling": 3,
    "yoga": 3,
    "kitchen": 4,
    "coffee": 6,
    "tea": 3,
    "books": 2,
    "garden": 2,
}


def categories() -> list[str]:
    """The demo's category names, in display order."""
    return [category.name for category in CATEGORIES]


def related_categories(category: str) -> frozenset[str]:
    """The category itself and the ones its shoppers move on to, either way round."""
    related = {category}
    related.update(target for target, _ in _BY_NAME[category].next)
    related.update(c.name for c in CATEGORIES if any(t == category for t, _ in c.next))
    return frozenset(related)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _item_id(category: Category, kind: Kind, variant: str) -> str:
    return f"{category.name}-{_slug(kind.name)}-{_slug(variant)}"


def catalog() -> list[dict[str, Any]]:
    """The demo catalog: each dict is the `item` of a catalog.upsert event."""
    rng = random.Random(CATALOG_SEED)
    items: list[dict[str, Any]] = []
    for category in CATEGORIES:
        for kind in category.kinds:
            for number, variant in enumerate(kind.variants):
                price = round(kind.price * rng.uniform(0.85, 1.3)) - 0.01
                item_id = _item_id(category, kind, variant)
                items.append(
                    {
                        "item_id": item_id,
                        "title": kind.name + TITLE_SEPARATOR + variant,
                        "category": category.name,
                        "price": max(price, 1.99),
                        # A few sold-out items (never a kind's first variant, so every
                        # kind has something to buy).
                        "in_stock": number == 0 or rng.random() > 0.07,
                        "url": f"/demo#item={item_id}",
                        "tags": [category.name, _slug(kind.name), _slug(variant)],
                    }
                )
    return items


def catalog_events(ts: float) -> list[dict[str, Any]]:
    """One catalog.upsert event per demo product, all at `ts`."""
    return [
        {
            "type": "catalog.upsert",
            "event_id": f"demo-catalog-{item['item_id']}",
            "ts": ts,
            "item": item,
        }
        for item in catalog()
    ]


# -- history --------------------------------------------------------------------------


class _Shopper:
    """Writes the events of one session: what it looks at, carts and buys."""

    def __init__(
        self, rng: random.Random, session_id: str, user_id: str | None, start: float
    ) -> None:
        self.rng = rng
        self.session_id = session_id
        self.user_id = user_id
        self.ts = start
        self.events: list[dict[str, Any]] = []
        self.cart: dict[str, int] = {}

    def emit(self, kind: str, **fields: Any) -> None:
        self.ts += self.rng.uniform(4.0, 75.0)
        event: dict[str, Any] = {"type": kind, "session_id": self.session_id}
        if self.user_id is not None:
            event["user_id"] = self.user_id
        event.update(fields)
        event["ts"] = round(self.ts, 3)
        self.events.append(event)

    def compare(self, category: Category, kind: Kind, prices: dict[str, float]) -> None:
        """View one to three variants of a kind; maybe click one and cart it."""
        ids = [_item_id(category, kind, variant) for variant in kind.variants]
        # Earlier variants are the popular ones: weights 1, 1/2, 1/3, …
        weights = [1.0 / (n + 1) for n in range(len(ids))]
        seen: list[str] = []
        for _ in range(self.rng.choice((1, 1, 2, 2, 3))):
            item = self.rng.choices(ids, weights)[0]
            if item not in seen:
                seen.append(item)
                self.emit("view", item_id=item)
        if self.rng.random() < 0.6:
            chosen = seen[0] if len(seen) == 1 else self.rng.choice(seen)
            self.emit("click", item_id=chosen)
            if self.rng.random() < 0.45:
                quantity = 2 if self.rng.random() < 0.1 else 1
                self.emit("add_to_cart", item_id=chosen, quantity=quantity, price=prices[chosen])
                self.cart[chosen] = self.cart.get(chosen, 0) + quantity

    def checkout(self, prices: dict[str, float]) -> None:
        """At the end: sometimes take one item out again; buy the cart in some sessions."""
        if len(self.cart) > 1 and self.rng.random() < 0.15:
            item = self.rng.choice(list(self.cart))
            self.emit("remove_from_cart", item_id=item, quantity=self.cart.pop(item))
        if self.cart and self.rng.random() < 0.55:
            lines = [
                {"item_id": item, "quantity": quantity, "price": prices[item]}
                for item, quantity in self.cart.items()
            ]
            self.emit("purchase", items=lines)


def _session(
    rng: random.Random,
    shopper: _Shopper,
    category: Category,
    prices: dict[str, float],
) -> None:
    """Walk a category's shopping path, sometimes over to a complementary category."""
    position = 0 if rng.random() < 0.6 else rng.randrange(len(category.kinds))
    if rng.random() < 0.1:
        shopper.emit("search", query=category.kinds[position].name.lower())
    for step in range(rng.randint(2, 7)):
        shopper.compare(category, category.kinds[position], prices)
        roll = rng.random()
        if step > 0 and roll < 0.15:
            break
        if roll < 0.75:
            position = (position + rng.choice((1, 1, 1, 2))) % len(category.kinds)
        else:
            target, entry = rng.choice(category.next)
            category = _BY_NAME[target]
            names = [kind.name for kind in category.kinds]
            position = names.index(entry) if entry is not None else 0
    shopper.checkout(prices)


def history(now: float) -> list[dict[str, Any]]:
    """About 3,000 shopping sessions over the `HISTORY_DAYS` days before `now`.

    Interaction events in time order (sessions interleave as in a real stream); each
    has event_id "demo-h-<n>", so loading the history twice applies it once. The last
    session ends well before `now`.
    """
    rng = random.Random(HISTORY_SEED)
    prices = {item["item_id"]: float(item["price"]) for item in catalog()}
    # Signed-in shoppers each have one or two favourite categories.
    favourites = {
        f"demo-u-{n:04d}": rng.sample(CATEGORIES, rng.choice((1, 1, 2))) for n in range(USERS)
    }
    users = list(favourites)
    traffic = [TRAFFIC[category.name] for category in CATEGORIES]
    span = HISTORY_DAYS * 86400.0 - 3600.0
    starts = sorted(now - HISTORY_DAYS * 86400.0 + rng.uniform(0.0, span) for _ in range(SESSIONS))
    events: list[dict[str, Any]] = []
    for number, start in enumerate(starts):
        user_id = rng.choice(users) if rng.random() < SIGNED_IN_SHARE else None
        if user_id is not None and rng.random() < 0.8:
            category = rng.choice(favourites[user_id])
        else:
            category = rng.choices(CATEGORIES, traffic)[0]
        shopper = _Shopper(rng, f"demo-s-{number:05d}", user_id, start)
        _session(rng, shopper, category, prices)
        events.extend(shopper.events)
    events.sort(key=_ts)  # stable: a session's events keep their order
    for n, event in enumerate(events):
        event["event_id"] = f"demo-h-{n}"
    return events


def _ts(event: dict[str, Any]) -> float:
    ts: float = event["ts"]
    return ts
