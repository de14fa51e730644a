"""What the shop refuses, in words a customer can read."""

from __future__ import annotations


class ShopError(Exception):
    pass


class OrderNotFound(ShopError):
    def __init__(self, number: str):
        super().__init__(f"Order {number} was not found among your orders.")


class RefundTooLarge(ShopError):
    pass


class OrderNotCancellable(ShopError):
    pass
