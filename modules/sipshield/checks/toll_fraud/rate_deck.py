"""What a minute to a number costs: the operator's rate deck, longest prefix first."""

from __future__ import annotations


class RateDeck:
    def __init__(self, prices: dict[str, float]) -> None:
        # Longest first: "+44909" is priced before "+44".
        self._prices = sorted(prices.items(), key=lambda item: len(item[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._prices)

    def per_minute(self, number: str) -> float:
        """The price per minute of the longest prefix of ``number`` in the deck; 0 when none."""
        return next((price for prefix, price in self._prices if number.startswith(prefix)), 0.0)
