"""Character and word error rates: edit distances summed over lines, divided by reference length."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein


@dataclass
class ErrorCounts:
    errors: int = 0
    length: int = 0

    @property
    def rate(self) -> float:
        return self.errors / self.length if self.length else (0.0 if self.errors == 0 else 1.0)

    def add(self, other: "ErrorCounts") -> None:
        self.errors += other.errors
        self.length += other.length


def char_errors(reference: str, prediction: str) -> ErrorCounts:
    return ErrorCounts(Levenshtein.distance(reference, prediction), len(reference))


def word_errors(reference: str, prediction: str) -> ErrorCounts:
    ref, pred = reference.split(), prediction.split()
    return ErrorCounts(Levenshtein.distance(ref, pred), len(ref))


def cer(references: list[str], predictions: list[str]) -> float:
    total = ErrorCounts()
    for r, p in zip(references, predictions, strict=True):
        total.add(char_errors(r, p))
    return total.rate


def wer(references: list[str], predictions: list[str]) -> float:
    total = ErrorCounts()
    for r, p in zip(references, predictions, strict=True):
        total.add(word_errors(r, p))
    return total.rate
