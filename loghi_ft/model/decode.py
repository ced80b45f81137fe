"""CTC decoding: best path or prefix beam search (optionally biased by a character n-gram), confidences, word spans.

A line's confidence is the probability of its reading given its frames, summed over every CTC alignment (the CTC
forward algorithm), to the power 1 / (characters read): a per-character geometric mean, comparable between short
and long lines, unlike the probability itself (which is the confidence raised to the number of characters). A line
read as empty gets the geometric mean of its frames' best probabilities. A word's confidence is the geometric mean
of its characters' best frame probability (the highest softmax probability within the run of frames that emits
it). On the timeus-1858 test pages the line confidence ranks lines by their errors better than the geometric mean
of best-frame probabilities did (benchmarks/bench_confidence.py).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loghi_ft.errors import UserError
from loghi_ft.model.codec import Codec

NEG_INF = -math.inf
BOS = "\n"  # line start in n-gram contexts: never part of a text line


@dataclass
class CharSpan:
    char: str
    start: int      # first frame that emits it
    end: int        # one past its last frame
    prob: float     # its best frame's probability


@dataclass
class Decoded:
    text: str
    conf: float                                          # in [0, 1], as the module's docstring defines it
    chars: list[CharSpan] = field(default_factory=list)  # the characters read, with their frames


@dataclass
class WordSpan:
    text: str
    conf: float
    x0: float   # in strip pixels
    x1: float


class CharNgram:
    """Character n-gram with interpolated Witten-Bell smoothing, trained on text lines (a corpus or a word list)."""

    def __init__(self, texts: list[str], order: int = 6, normalization: str = "NFC"):
        self.order = order
        self.counts: dict[str, Counter] = defaultdict(Counter)
        vocab: set[str] = set()
        for text in texts:
            if normalization != "none":
                text = unicodedata.normalize(normalization, text)
            text = " ".join(text.split())
            if not text:
                continue
            vocab.update(text)
            padded = BOS * (order - 1) + text
            for i in range(order - 1, len(padded)):
                for n in range(order):
                    self.counts[padded[i - n:i]][padded[i]] += 1
        if not vocab:
            raise UserError("language model: no text to learn from")
        self.uniform = 1.0 / (len(vocab) + 1)  # +1: characters never seen still get some mass
        self.totals = {h: sum(c.values()) for h, c in self.counts.items()}
        self.cache: dict[tuple[str, str], float] = {}

    @classmethod
    def from_file(cls, path: Path, order: int = 6, normalization: str = "NFC") -> "CharNgram":
        """One text line or word per line; a Loghi list file (path<TAB>text) gives its texts."""
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{path}: language model text not found") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        texts = [line.rsplit("\t", 1)[-1] for line in raw.splitlines() if not line.startswith("#")]
        return cls(texts, order, normalization)

    def logprob(self, context: str, char: str) -> float:
        """log P(char | the last order-1 characters of context)."""
        context = (BOS * (self.order - 1) + context)[-(self.order - 1):] if self.order > 1 else ""
        key = (context, char)
        cached = self.cache.get(key)
        if cached is None:
            p = self.uniform
            for n in range(0, self.order):
                h = context[len(context) - n:] if n else ""
                seen = self.counts.get(h)
                if seen is None:
                    break
                types = len(seen)
                p = (seen[char] + types * p) / (self.totals[h] + types)
            cached = self.cache[key] = math.log(p)
        return cached


class Decoder:
    """Turns logits or log-probabilities (N, T, K) and valid lengths into text, its confidence and its frames.

    Greedy (best path) when beam_width <= 1, else prefix beam search. The text is stripped of leading and
    trailing whitespace, the same for validation in training as for inference."""

    def __init__(self, codec: Codec, beam_width: int = 1, lm: CharNgram | None = None, lm_weight: float = 0.3,
                 length_bonus: float = 0.0, prune: float = 1e-3):
        self.codec = codec
        self.beam_width = beam_width
        self.lm = lm
        self.lm_weight = lm_weight
        self.length_bonus = length_bonus
        self.log_prune = math.log(prune)

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[Decoded]:
        # log_softmax of log-probabilities gives them back: either may come in
        logp = torch.log_softmax(logits.detach().float(), -1).cpu()
        rows = logp.numpy()
        lengths = lengths.long().cpu()
        read = []
        for n, length in enumerate(lengths.tolist()):
            row = rows[n, :length]
            if self.beam_width <= 1:
                read.append(self.best_path(row))
            else:
                read.append(self.aligned(row, self.beam_search(row)) if row.shape[0] else [])
        confs = confidences(logp, lengths, [[self.codec.index[c.char] for c in chars] for chars in read])
        return [Decoded("".join(c.char for c in chars).strip(), conf, chars) for chars, conf in zip(read, confs)]

    def best_path(self, logp: np.ndarray) -> list[CharSpan]:
        """The most probable frame by frame: runs of one label merged, blanks dropped."""
        if not logp.shape[0]:
            return []
        ids = logp.argmax(-1)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        # a run's label is the best of each of its frames, so its best frame's probability is the run's maximum
        probs = np.exp(np.maximum.reduceat(logp.max(-1), starts))
        keep = ids[starts] != 0
        return [CharSpan(self.codec.charset[k - 1], a, b, p) for k, a, b, p in
                zip(ids[starts][keep].tolist(), starts[keep].tolist(), ends[keep].tolist(), probs[keep].tolist())]

    def aligned(self, logp: np.ndarray, ids: list[int]) -> list[CharSpan]:
        """The labels with the frames of their best alignment and their best frame's probability."""
        chars = []
        for i, (a, b) in zip(ids, align(logp, ids)):
            chars.append(CharSpan(self.codec.charset[i - 1], a, b + 1, float(np.exp(logp[a:b + 1, i].max()))))
        return chars

    def beam_search(self, logp: np.ndarray) -> list[int]:
        """CTC prefix beam search; with an n-gram, each new character adds lm_weight * log P_lm + length_bonus."""
        # prefix -> [log P(ends in blank), log P(ends in its last label)]
        beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
        bias: dict[tuple[int, ...], float] = {(): 0.0}
        top = np.argsort(-logp[:, 1:], axis=1)[:, : self.beam_width] + 1
        for t in range(logp.shape[0]):
            row = logp[t].tolist()
            candidates = [c for c in top[t].tolist() if row[c] > self.log_prune]
            blank = row[0]
            nxt: dict[tuple[int, ...], list[float]] = {}
            for prefix, (pb, pnb) in beams.items():
                total = logaddexp(pb, pnb)
                here = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
                here[0] = logaddexp(here[0], total + blank)
                if prefix:
                    here[1] = logaddexp(here[1], pnb + row[prefix[-1]])
                for c in candidates:
                    new = prefix + (c,)
                    # a repeated label needs a blank between, or it merges into the previous one
                    p = (pb if prefix and prefix[-1] == c else total) + row[c]
                    slot = nxt.setdefault(new, [NEG_INF, NEG_INF])
                    slot[1] = logaddexp(slot[1], p)
                    if new not in bias:
                        bias[new] = bias[prefix] + self.extension_bias(prefix, c)
            if len(nxt) > self.beam_width:
                ranked = sorted(nxt.items(), key=lambda kv: logaddexp(*kv[1]) + bias[kv[0]], reverse=True)
                nxt = dict(ranked[: self.beam_width])
            beams = nxt
        return list(max(beams, key=lambda p: logaddexp(*beams[p]) + bias[p]))

    def extension_bias(self, prefix: tuple[int, ...], c: int) -> float:
        if self.lm is None:
            return 0.0
        context = "".join(self.codec.charset[i - 1] for i in prefix[-(self.lm.order - 1):]) if self.lm.order > 1 else ""
        return self.lm_weight * self.lm.logprob(context, self.codec.charset[c - 1]) + self.length_bonus


def logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == NEG_INF else a + math.log1p(math.exp(b - a))


def align(logp: np.ndarray, ids: list[int]) -> list[tuple[int, int]]:
    """Viterbi CTC alignment of `ids` to the frames: each label's first and last frame."""
    T = logp.shape[0]
    states = [0]
    for i in ids:
        states += [i, 0]
    S = len(states)
    labels = np.asarray(states)
    # a label state may be entered from two states back when it differs from that state's label (skip a blank)
    can_skip = np.zeros(S, bool)
    can_skip[2:] = (labels[2:] != 0) & (labels[2:] != labels[:-2])
    score = np.full(S, NEG_INF)
    score[0] = logp[0, 0]
    if S > 1:
        score[1] = logp[0, labels[1]]
    back = np.zeros((T, S), np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, T):
        stay = score
        step = np.concatenate(([NEG_INF], score[:-1]))
        skip = np.where(can_skip, np.concatenate(([NEG_INF, NEG_INF], score[:-2])), NEG_INF)
        choices = np.stack([stay, step, skip])
        back[t] = choices.argmax(0)
        score = choices.max(0) + logp[t, labels]
    end = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2
    if not np.isfinite(score[end]):
        # more labels than frames can hold: no alignment exists (cannot happen for decoded output)
        return [(0, T - 1)] * len(ids)
    spans: list[list[int]] = [[T, -1] for _ in ids]
    s = end
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            span = spans[s // 2]
            span[0] = min(span[0], t)
            span[1] = max(span[1], t)
        s -= int(back[t, s])
    return [(a, b) for a, b in spans]


def confidences(logp: torch.Tensor, lengths: torch.Tensor, labels: list[list[int]]) -> list[float]:
    """Each line's confidence (see the module's docstring) from its log-probabilities (N, T, K) and its labels."""
    targets = torch.tensor([i for ids in labels for i in ids], dtype=torch.long)
    counts = torch.tensor([len(ids) for ids in labels], dtype=torch.long)
    # -log P(labels | frames) summed over all alignments; infinite only where no alignment exists (never for a reading)
    nll = F.ctc_loss(logp.transpose(0, 1), targets, lengths, counts, blank=0, reduction="none").tolist()
    out = []
    for n, ids in enumerate(labels):
        if ids:
            out.append(math.exp(-nll[n] / len(ids)))
        else:
            frames = logp[n, : int(lengths[n])]
            out.append(float(frames.max(-1).values.mean().exp()) if frames.shape[0] else 0.0)
    return out


def word_spans(chars: list[CharSpan], frames: int, strip_width: int) -> list[WordSpan]:
    """Words split at spaces, each with its confidence and the strip x-range its characters were aligned to."""
    if not chars or frames <= 0:
        return []
    scale = strip_width / frames
    words = []
    i, n = 0, len(chars)
    while i < n:
        if chars[i].char.isspace():
            i += 1
            continue
        j = i
        while j < n and not chars[j].char.isspace():
            j += 1
        # a word reaches halfway to its neighbours' frames: CTC fires inside a glyph, not at its edges
        left = (chars[i - 1].end + chars[i].start) / 2 * scale if i > 0 else 0.0
        right = (chars[j - 1].end + chars[j].start) / 2 * scale if j < n else float(strip_width)
        word = chars[i:j]
        conf = math.exp(sum(math.log(max(c.prob, 1e-12)) for c in word) / len(word))
        words.append(WordSpan("".join(c.char for c in word), conf, max(0.0, left), min(float(strip_width), right)))
        i = j
    return words
