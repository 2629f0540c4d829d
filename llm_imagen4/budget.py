"""A cap on what a run of generations may cost: ``--max-credits`` and
``--max-usd`` of a batch, ``max_usd`` of the toolbox.

A generation starts only if what is spent, plus what the generations in
flight may cost, plus its own cost, stays within the cap. Its cost is its
images times its model's price an image: the published one (see
``catalogue``), or the dearest paid so far where that is dearer. A model
with no published price is learned from its first answer: that generation
runs alone, and nothing else starts until it has ended.

A generation whose answer was lost counts at what the API's log says it
cost, or else at its reckoned cost, as it may have been charged. One the
API refused costs nothing."""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field

from . import catalogue, ledger
from .record import GenerationRecord
from .terminal import counted

# What ``admit`` answers while others in flight must end first.
WAIT = "wait"


@dataclass
class Budget:
    max_credits: float | None = None
    max_usd: float | None = None
    # How the two caps are spelled where they were set.
    names: tuple[str, str] = ("--max-credits", "--max-usd")
    # By model id: the published price an image in dollars, None if unknown.
    published: dict[str, float | None] = field(default_factory=dict)
    credits: float = 0.0
    usd: float = 0.0
    # By model id: the dearest (credits, dollars) an image paid so far.
    paid: dict[str, tuple[float, float]] = field(default_factory=dict)
    # What each generation in flight was reckoned to cost.
    reserved: dict[Hashable, tuple[float, float]] = field(default_factory=dict)
    # Why no generation may start any more, once the cap cannot be kept.
    broken: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def capped(self) -> bool:
        return self.max_credits is not None or self.max_usd is not None

    def price(self, model_id: str) -> tuple[float, float] | None:
        """A model's (credits, dollars) an image, or None while not known."""
        usd = self.published.get(model_id)
        paid = self.paid.get(model_id)
        if usd is None:
            return paid
        known = (catalogue.credits(usd), usd)
        return (max(known[0], paid[0]), max(known[1], paid[1])) if paid else known

    def admit(self, key: Hashable, model_id: str, images: int) -> str | None:
        """None when the generation ``key`` may start now (it then counts as
        in flight); else WAIT, or why it would break the cap."""
        with self.lock:
            if self.broken:
                return self.broken
            estimate = (0.0, 0.0)
            if self.capped:
                price = self.price(model_id)
                if price is None:
                    if self.reserved:
                        return WAIT
                    # Alone, holding back the rest until its answer.
                    estimate = (math.inf, math.inf)
                else:
                    estimate = (price[0] * images, price[1] * images)
                    over = self._over(estimate)
                    if over:
                        if self.reserved:
                            return WAIT
                        return (
                            f"{over}: {counted(images, 'image')} "
                            f"{'costs' if images == 1 else 'cost'} "
                            f"{catalogue.usd_text(estimate[1])} "
                            f"({estimate[0]:g} credits) at "
                            f"{catalogue.usd_text(price[1])} an image"
                        )
            self.reserved[key] = estimate
            return None

    def _over(self, estimate: tuple[float, float]) -> str | None:
        credits, usd = self.credits + estimate[0], self.usd + estimate[1]
        for credits_more, usd_more in self.reserved.values():
            credits, usd = credits + credits_more, usd + usd_more
        # With room for float rounding: five rows of $0.06 fit in $0.30.
        for name, cap, total in zip(
            self.names, (self.max_credits, self.max_usd), (credits, usd), strict=True
        ):
            if cap is not None and total > cap * (1 + 1e-9):
                return f"{name} {cap:g} would be exceeded"
        return None

    def refused(self, key: Hashable) -> None:
        """The API refused the generation: it cost nothing."""
        with self.lock:
            self.reserved.pop(key, None)

    def settle(
        self,
        key: Hashable,
        model_id: str,
        record: GenerationRecord | None,
        listed: ledger.Listed | None = None,
    ) -> None:
        """The generation ``key`` ended: with the API's answer (``record``),
        or with a lost answer that the log lists (``listed``) or does not."""
        with self.lock:
            estimate = self.reserved.pop(key, (0.0, 0.0))
            if record is None:
                if listed is not None:
                    self.credits += listed.credits or 0
                    self.usd += listed.usd or 0
                elif math.isfinite(estimate[0]):
                    self.credits, self.usd = (
                        self.credits + estimate[0],
                        self.usd + estimate[1],
                    )
                elif self.capped:
                    self.broken = (
                        "the cost of a lost answer is not known yet, so the cap "
                        "cannot be kept"
                    )
                return
            self.credits += record.credits_used or 0
            self.usd += record.usd_spent or 0
            if (self.max_credits is not None and record.credits_used is None) or (
                self.max_usd is not None and record.usd_spent is None
            ):
                self.broken = "the API reported no cost, so the cap cannot be kept"
                return
            images = max(1, len(record.images))
            known = self.paid.get(model_id, (0.0, 0.0))
            self.paid[model_id] = (
                max(known[0], (record.credits_used or 0) / images),
                max(known[1], (record.usd_spent or 0) / images),
            )

    def left(self) -> float | None:
        """Dollars still to spend under ``max_usd``."""
        if self.max_usd is None:
            return None
        with self.lock:
            return max(0.0, self.max_usd - self.usd)
