"""What is known about each item: catalog fields, availability and event counters.

Per-item numpy arrays indexed by ItemIndex positions. Items mentioned only by events
are "seen" but not `in_catalog`; they are recommendable like any other. A
catalog.delete marks an item deleted (never recommended, not answered by item_info)
until a later catalog.upsert brings it back; its index and counters are kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from recsrv.events import CatalogItem
from recsrv.state.items import grown

# Interaction types counted per item, in counter-column order; search mentions no item.
COUNTED_TYPES: Final = ("view", "click", "add_to_cart", "remove_from_cart", "purchase")
# The int8 code of each interaction type, as session ring buffers store it.
TYPE_CODE: Final = {name: code for code, name in enumerate((*COUNTED_TYPES, "search"))}

NO_CATEGORY: Final = -1


class Catalog:
    """Catalog fields, availability and counters of every seen item."""

    # The per-item arrays, as to_arrays names them.
    ARRAYS: Final = (
        "in_stock",
        "deleted",
        "in_catalog",
        "available",
        "category",
        "price",
        "counters",
    )

    def __init__(self, capacity: int) -> None:
        self.in_stock = np.ones(capacity, dtype=np.bool_)
        self.deleted = np.zeros(capacity, dtype=np.bool_)
        self.in_catalog = np.zeros(capacity, dtype=np.bool_)
        # in_stock and not deleted, kept in step so that reads mask with one array.
        self.available = np.ones(capacity, dtype=np.bool_)
        self.category = np.full(capacity, NO_CATEGORY, dtype=np.int32)
        self.price = np.full(capacity, np.nan, dtype=np.float64)
        self.counters = np.zeros((capacity, len(COUNTED_TYPES)), dtype=np.int64)
        self.categories: list[str] = []
        self._category_index: dict[str, int] = {}
        # Text fields of catalog items only: idx → {title, url, image_url, tags,
        # properties} as orjson bytes. Bytes are no containers for the garbage
        # collector: a dict and a list per item made every full collection walk the
        # catalog (tens of milliseconds for 50,000 items, with the event loop held).
        self.meta: dict[int, bytes] = {}
        self._flat_views()

    def _flat_views(self) -> None:
        # The counters as one flat view: the per-event count without numpy's overhead.
        self._flat_counters = self.counters.data.cast("B").cast("q")

    def grow(self, capacity: int) -> None:
        self.in_stock = grown(self.in_stock, capacity, True)
        self.deleted = grown(self.deleted, capacity, False)
        self.in_catalog = grown(self.in_catalog, capacity, False)
        self.available = grown(self.available, capacity, True)
        self.category = grown(self.category, capacity, NO_CATEGORY)
        self.price = grown(self.price, capacity, np.nan)
        self.counters = grown(self.counters, capacity, 0)
        self._flat_views()

    def to_arrays(self, n: int) -> dict[str, npt.NDArray[Any]]:
        """The per-item arrays of the first n items: views, valid until the next write."""
        return {name: getattr(self, name)[:n] for name in self.ARRAYS}

    def restore(
        self,
        arrays: Mapping[str, npt.NDArray[Any]],
        categories: list[str],
        meta: Mapping[int, Mapping[str, Any]],
    ) -> None:
        """Take over what to_arrays gave, the category names (in code order) and the text
        fields; the arrays must already have room for the items."""
        for name in self.ARRAYS:
            source = arrays[name]
            getattr(self, name)[: len(source)] = source
        self.categories = categories
        self._category_index = {name: code for code, name in enumerate(categories)}
        self.meta = {idx: orjson.dumps(entry) for idx, entry in meta.items()}

    def category_code(self, name: str) -> int:
        """The code of a category name, NO_CATEGORY if no item ever had it."""
        return self._category_index.get(name, NO_CATEGORY)

    def upsert(self, idx: int, item: CatalogItem) -> None:
        """Replace the item's catalog entry (PUT semantics: omitted fields become empty)."""
        self.in_catalog[idx] = True
        self.deleted[idx] = False
        self.in_stock[idx] = item.in_stock
        self.available[idx] = item.in_stock
        self.category[idx] = self._add_category(item.category)
        self.price[idx] = np.nan if item.price is None else item.price
        self.meta[idx] = orjson.dumps(
            {
                "title": item.title,
                "url": item.url,
                "image_url": item.image_url,
                "tags": item.tags,
                "properties": item.properties,
            }
        )

    def delete(self, idx: int) -> None:
        self.deleted[idx] = True
        self.available[idx] = False

    def count(self, idx: int, code: int) -> None:
        self._flat_counters[idx * len(COUNTED_TYPES) + code] += 1

    def info(self, idx: int) -> dict[str, Any]:
        """Catalog fields and counters of one item, as item_info reports them."""
        entry = self.meta.get(idx)
        meta: dict[str, Any] = {} if entry is None else orjson.loads(entry)
        category = int(self.category[idx])
        price = float(self.price[idx])
        counts = self.counters[idx].tolist()
        return {
            "title": meta.get("title"),
            "category": self.categories[category] if category != NO_CATEGORY else None,
            "price": None if math.isnan(price) else price,
            "in_stock": bool(self.in_stock[idx]),
            "url": meta.get("url"),
            "image_url": meta.get("image_url"),
            "tags": list(meta.get("tags", ())),
            "properties": meta.get("properties"),
            "in_catalog": bool(self.in_catalog[idx]),
            "counters": dict(zip(COUNTED_TYPES, counts, strict=True)),
        }

    def in_category(self, n: int, code: int) -> npt.NDArray[np.bool_]:
        """Mask over the first n items: which belong to category `code`."""
        in_category: npt.NDArray[np.bool_] = self.category[:n] == code
        return in_category

    def _add_category(self, name: str | None) -> int:
        if name is None:
            return NO_CATEGORY
        code = self._category_index.get(name)
        if code is None:
            code = len(self.categories)
            self._category_index[name] = code
            self.categories.append(name)
        return code
