"""A dict for the state's containers that a full garbage collection never walks.

The server freezes what start-up made once the state is restored (recsrv.app:
`gc.freeze`), so that a full collection walks only what came after. The state's
containers are made then and only grow, and what they gain (ids, dicts of numbers) is
nothing the collector tracks. But CPython tracks a plain dict only once it holds a
tracked object, and untracks it again when a collection finds it holds none: an empty
dict of carts made at start escapes the freeze, is tracked with its first cart, and from
then on every full collection walks all of its entries (11.8 ms for 263,578 carts
here, the loop held meanwhile; bench/notes.md, P3). An instance of a dict subclass is
tracked from birth and never untracked, so the freeze takes it, empty or not.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LongLivedDict(dict[K, V]):
    """A dict, tracked by the garbage collector from birth (see the module's docstring)."""

    __slots__ = ()
