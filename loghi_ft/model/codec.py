"""Characters <-> output rows: row 0 is the CTC blank, row i+1 is charset[i] (decoding is in model/decode.py)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from loghi_ft.errors import UserError


def build_charset(texts: Iterable[str]) -> list[str]:
    """Sorted distinct characters of the texts."""
    return sorted(set().union(*map(set, texts)))


class Codec:
    """Maps text to class ids (1..len(charset)) and class ids back to text."""

    def __init__(self, charset: list[str]):
        if len(set(charset)) != len(charset):
            raise UserError("charset lists a character twice")
        if any(len(c) != 1 for c in charset):
            raise UserError(f"charset entries must be single characters: {[c for c in charset if len(c) != 1][:5]}")
        self.charset = list(charset)
        self.index = {c: i + 1 for i, c in enumerate(self.charset)}

    @property
    def num_classes(self) -> int:
        return len(self.charset) + 1

    def unknown(self, text: str) -> list[str]:
        """Characters of text the charset lacks, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        """Class ids of the text; UserError naming the characters the charset lacks."""
        try:
            return [self.index[c] for c in text]
        except KeyError:
            missing = ", ".join(f"{c!r} ({unicodedata.name(c, f'U+{ord(c):04X}')})" for c in self.unknown(text))
            raise UserError(f"characters not in the model's charset: {missing}") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of class ids; blanks are skipped, repeats are kept (these are labels, not frames)."""
        return "".join(self.charset[i - 1] for i in ids if i > 0)

    def extend(self, texts: Iterable[str]) -> Codec:
        """A codec with this charset first, then the texts' new characters (sorted)."""
        new = [c for c in build_charset(texts) if c not in self.index]
        return Codec(self.charset + new)
