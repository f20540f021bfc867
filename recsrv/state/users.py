"""Shoppers' long-term profiles: what each user carted and purchased before.

Sessions carrying a user_id link to a user index here. A profile maps item index →
accumulated weight (CART_WEIGHT per add_to_cart, PURCHASE_WEIGHT per purchased line)
and holds at most `max_items` items: past the bound the lightest one is dropped.
Profiles do not decay: what someone bought months ago still says what they like.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from recsrv.state.long_lived import LongLivedDict

CART_WEIGHT: Final = 0.5
PURCHASE_WEIGHT: Final = 1.0
# The repeat rate starts from this prior, worth REPEAT_PRIOR_CREDITS credits.
REPEAT_PRIOR: Final = 0.1
REPEAT_PRIOR_CREDITS: Final = 50.0


class Users:
    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.index: dict[str, int] = {}
        self.user_ids: list[str] = []  # user index → id ("" while free)
        self.free: list[int] = []
        self.profiles: dict[int, dict[int, float]] = LongLivedDict()
        # Credits given, and those for an item the user had already purchased.
        self.credits = 0
        self.repeat_credits = 0

    def __len__(self) -> int:
        return len(self.index)

    def get(self, user_id: str) -> int | None:
        return self.index.get(user_id)

    def add(self, user_id: str) -> int:
        user = self.index.get(user_id)
        if user is None:
            if self.free:
                user = self.free.pop()
                self.user_ids[user] = user_id
            else:
                user = len(self.user_ids)
                self.user_ids.append(user_id)
            self.index[user_id] = user
        return user

    def restore(
        self, user_ids: list[str], free: list[int], profiles: dict[int, dict[int, float]]
    ) -> None:
        """Take over a snapshot's users (user index → id, "" while free), free list and
        profiles. A profile longer than max_items (the bound was lowered) loses its
        lightest items, as credit would have dropped them."""
        self.user_ids = user_ids
        self.free = free
        unused = set(free)
        self.index = {uid: user for user, uid in enumerate(user_ids) if user not in unused}
        for profile in profiles.values():
            if len(profile) > self.max_items:
                self._trim(profile, self.max_items)
        self.profiles = LongLivedDict(profiles)

    @staticmethod
    def _trim(profile: dict[int, float], max_items: int) -> None:
        """Drop the lightest items until max_items are left; ties drop the oldest
        first, as repeated `min` over the dict would."""
        drop = len(profile) - max_items
        by_weight = sorted(enumerate(profile.items()), key=lambda entry: (entry[1][1], entry[0]))
        for _, (item, _weight) in by_weight[:drop]:
            del profile[item]

    def credit(self, user: int, item: int, weight: float) -> None:
        """Add `weight` to `item` in the user's profile, keeping it within the bound."""
        profile = self.profiles.setdefault(user, {})
        before = profile.get(item, 0.0)
        profile[item] = before + weight
        self.credits += 1
        if before >= PURCHASE_WEIGHT:
            self.repeat_credits += 1
        if len(profile) > self.max_items:
            # Only when full: a scan of max_items floats, and ties drop the oldest item.
            del profile[min(profile, key=profile.__getitem__)]

    def repeat_rate(self) -> float:
        """Share of carts and purchases of an item the shopper had purchased before,
        smoothed towards REPEAT_PRIOR while there are few."""
        prior = REPEAT_PRIOR * REPEAT_PRIOR_CREDITS
        return (self.repeat_credits + prior) / (self.credits + REPEAT_PRIOR_CREDITS)

    def profile(self, user: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(items, weights) of the user's profile, in the order items entered it; empty
        for an unknown user (-1 included)."""
        profile = self.profiles.get(user)
        if not profile:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        items = np.fromiter(profile.keys(), dtype=np.int64, count=len(profile))
        weights = np.fromiter(profile.values(), dtype=np.float64, count=len(profile))
        return items, weights

    def forget(self, user_id: str) -> int | None:
        """Remove the user and their profile; returns the index they had, or None."""
        user = self.index.pop(user_id, None)
        if user is None:
            return None
        self.profiles.pop(user, None)
        self.user_ids[user] = ""
        self.free.append(user)
        return user
