"""Events for unit tests of the model, at times relative to T0."""

from __future__ import annotations

from typing import Any

from recsrv.events import CatalogItem, CatalogUpsert, Interaction

T0 = 1_700_000_000.0


def act(
    kind: str, session: str, item: str | None = None, t: float = 0.0, **fields: Any
) -> Interaction:
    return Interaction(kind, session, ts=T0 + t, item_id=item, **fields)


def upsert(item: str, t: float = 0.0, **fields: Any) -> CatalogUpsert:
    return CatalogUpsert(CatalogItem(item, **fields), ts=T0 + t)
