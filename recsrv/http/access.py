"""Who may call what: the access level of every route (design section 8).

    open    anyone: probes, this API's description, the SDK and the demo shop
    public  a public or a secret key: recommendation reads, live streams, and
            POST /v1/events (a public key may post browsing events only)
    secret  a secret key: the catalog, forgetting a user, the item counters, the
            model's weights and quality, admin

A route missing from the table needs a secret key, so a new route is closed until
someone decides otherwise. Pure data: the middleware (recsrv.http.security) and the
OpenAPI document (recsrv.http.openapi) both read it.
"""

from __future__ import annotations

import enum
from typing import Final


class Access(enum.Enum):
    OPEN = "open"
    PUBLIC = "public"
    SECRET = "secret"


ROUTE_ACCESS: Final[dict[tuple[str, str], Access]] = {
    ("GET", "/v1/recommendations"): Access.PUBLIC,
    ("GET", "/v1/items/{item_id}/similar"): Access.PUBLIC,
    ("GET", "/v1/items/{item_id}/bought-together"): Access.PUBLIC,
    ("GET", "/v1/popular"): Access.PUBLIC,
    ("GET", "/v1/sessions/{session_id}/stream"): Access.PUBLIC,
    ("POST", "/v1/events"): Access.PUBLIC,
    # The counters of an item are the shop's sales figures: not for a key on a web page.
    ("GET", "/v1/items/{item_id}"): Access.SECRET,
    ("PUT", "/v1/items/{item_id}"): Access.SECRET,
    ("DELETE", "/v1/items/{item_id}"): Access.SECRET,
    ("DELETE", "/v1/users/{user_id}"): Access.SECRET,
    ("POST", "/v1/admin/checkpoint"): Access.SECRET,
    # How well the shop's lists do, and what the blend learnt from its shoppers.
    ("GET", "/v1/model"): Access.SECRET,
    ("GET", "/healthz"): Access.OPEN,
    ("GET", "/readyz"): Access.OPEN,
    # Open unless auth.protect_metrics (then secret): scrapers usually sit on a private network.
    ("GET", "/metrics"): Access.OPEN,
    ("GET", "/openapi.json"): Access.OPEN,
    ("GET", "/sdk.js"): Access.OPEN,
    ("GET", "/demo"): Access.OPEN,
    ("GET", "/demo/catalog.json"): Access.OPEN,
    ("GET", "/static/{name}"): Access.OPEN,
}
METRICS_ROUTE: Final = ("GET", "/metrics")


def route_access(method: str, path: str, protect_metrics: bool = False) -> Access:
    """The access level of a route, by method and path template (HEAD is GET's)."""
    route = ("GET" if method == "HEAD" else method, path)
    if route == METRICS_ROUTE and protect_metrics:
        return Access.SECRET
    return ROUTE_ACCESS.get(route, Access.SECRET)
