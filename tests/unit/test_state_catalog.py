import gc
import math

from recsrv.events import CatalogItem
from recsrv.state.catalog import COUNTED_TYPES, NO_CATEGORY, TYPE_CODE, Catalog


def test_upsert_replaces_the_entry_and_keeps_availability_in_step() -> None:
    catalog = Catalog(capacity=4)
    catalog.upsert(1, CatalogItem("x", title="X", category="shoes", price=9.5, tags=("a",)))
    catalog.upsert(2, CatalogItem("y", category="shoes", in_stock=False))
    assert catalog.category_code("shoes") == 0
    assert catalog.category_code("hats") == NO_CATEGORY
    assert catalog.available.tolist() == [True, True, False, True]
    info = catalog.info(1)
    assert info["title"] == "X"
    assert info["price"] == 9.5
    assert info["tags"] == ["a"]
    assert info["in_catalog"] is True
    catalog.upsert(1, CatalogItem("x"))  # PUT semantics: omitted fields become empty
    info = catalog.info(1)
    assert info["title"] is None
    assert info["category"] is None
    assert info["price"] is None
    assert catalog.in_category(4, 0).tolist() == [False, False, True, False]


def test_delete_and_undelete() -> None:
    catalog = Catalog(capacity=2)
    catalog.delete(0)
    assert catalog.deleted[0]
    assert not catalog.available[0]
    catalog.upsert(0, CatalogItem("x"))
    assert not catalog.deleted[0]
    assert catalog.available[0]


def test_counters_per_type_and_growth() -> None:
    catalog = Catalog(capacity=2)
    catalog.count(1, TYPE_CODE["purchase"])
    catalog.count(1, TYPE_CODE["purchase"])
    catalog.count(1, TYPE_CODE["view"])
    catalog.grow(8)
    catalog.count(7, TYPE_CODE["remove_from_cart"])
    assert catalog.info(1)["counters"] == {
        "view": 1,
        "click": 0,
        "add_to_cart": 0,
        "remove_from_cart": 0,
        "purchase": 2,
    }
    assert catalog.info(7)["counters"]["remove_from_cart"] == 1
    assert catalog.in_stock[7]
    assert math.isnan(catalog.price[7])
    assert list(catalog.info(7)["counters"]) == list(COUNTED_TYPES)


def test_text_fields_give_the_garbage_collector_nothing_to_walk() -> None:
    # A dict and a list per item made every full collection walk the whole catalog.
    catalog = Catalog(capacity=2048)
    gc.collect()
    before = len(gc.get_objects())
    for idx in range(2000):
        item = CatalogItem(f"i{idx}", title="T", tags=("a", "b"), properties=nested_properties())
        catalog.upsert(idx, item)
    del item
    gc.collect()
    assert len(gc.get_objects()) - before < 20
    assert not gc.is_tracked(catalog.meta)
    info = catalog.info(1999)
    assert (info["tags"], info["properties"]) == (["a", "b"], nested_properties())


def nested_properties() -> dict[str, object]:
    return {"color": "red", "sizes": [38, 39], "fit": {"cut": "slim"}}
