import pytest

from recsrv.state.users import CART_WEIGHT, PURCHASE_WEIGHT, Users


def test_credit_accumulates() -> None:
    users = Users(max_items=10)
    user = users.add("u1")
    users.credit(user, 5, CART_WEIGHT)
    users.credit(user, 5, PURCHASE_WEIGHT)
    users.credit(user, 6, CART_WEIGHT)
    items, weights = users.profile(user)
    assert items.tolist() == [5, 6]
    assert weights.tolist() == pytest.approx([1.5, 0.5])


def test_profile_is_bounded_by_dropping_the_lightest_item() -> None:
    users = Users(max_items=3)
    user = users.add("u1")
    for item, weight in ((1, 1.0), (2, 0.5), (3, 2.0), (4, 1.5)):
        users.credit(user, item, weight)
    items, _ = users.profile(user)
    assert items.tolist() == [1, 3, 4]


def test_forget_removes_profile_and_frees_the_index() -> None:
    users = Users(max_items=3)
    first = users.add("u1")
    users.add("u2")
    users.credit(first, 1, 1.0)
    assert users.forget("u1") == first
    assert users.forget("u1") is None
    assert users.get("u1") is None
    assert len(users) == 1
    assert users.profile(first)[0].tolist() == []
    assert users.add("u3") == first  # the index is reused, without the old profile
    assert users.profile(first)[0].tolist() == []


def test_unknown_user_has_an_empty_profile() -> None:
    users = Users(max_items=3)
    assert users.profile(-1)[0].tolist() == []
    assert users.add("u") == users.add("u")


def test_repeat_rate_counts_credits_for_items_purchased_before() -> None:
    users = Users(max_items=10)
    u = users.add("u")
    assert users.repeat_rate() == pytest.approx(0.1)  # the prior, with no credits yet
    users.credit(u, 1, CART_WEIGHT)  # new item
    users.credit(u, 1, PURCHASE_WEIGHT)  # carted, not purchased before: no repeat
    users.credit(u, 1, CART_WEIGHT)  # purchased before: a repeat
    users.credit(u, 2, CART_WEIGHT)
    assert (users.credits, users.repeat_credits) == (4, 1)
    assert users.repeat_rate() == pytest.approx((1 + 5) / (4 + 50))
