"""The Instacart converter (scripts/instacart_events.py) and design Q1 on its output."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
HEADER = ",order_id,user_id,order_number,order_dow,order_hour_of_day,"
HEADER += "days_since_prior_order,product_id,add_to_cart_order,reordered\n"


def converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "instacart_events", ROOT / "scripts/instacart_events.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_orders_become_sessions_of_carts_and_a_purchase() -> None:
    rows = HEADER + "\n".join(
        [
            "0,10,7,1,2,8,,100,2.0,0.0",  # order 10, line 2 before line 1 in the file
            "1,10,7,1,2,8,,200,1.0,0.0",
            "2,11,7,2,4,9,3.0,100,1.0,1.0",  # three days later, at 9:00
        ]
    )
    module = converter()
    events = module.order_events(module.read_orders(csv.DictReader(io.StringIO(rows))))
    base = module.BASE_TS
    assert [(e["type"], e["session_id"], e.get("item_id")) for e in events] == [
        ("add_to_cart", "order-10", "200"),
        ("add_to_cart", "order-10", "100"),
        ("purchase", "order-10", None),
        ("add_to_cart", "order-11", "100"),
        ("purchase", "order-11", None),
    ]
    assert [e["ts"] - base for e in events] == [
        8 * 3600 + 30,
        8 * 3600 + 60,
        8 * 3600 + 90,
        3 * 86400 + 9 * 3600 + 30,
        3 * 86400 + 9 * 3600 + 60,
    ]
    assert events[2]["items"] == [{"item_id": "200"}, {"item_id": "100"}]
    assert {e["user_id"] for e in events} == {"7"}
    assert len({e["event_id"] for e in events}) == 5
