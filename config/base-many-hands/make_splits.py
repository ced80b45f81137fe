"""Write splits/<source>.tsv for the GitHub sources of the many-hands base model (see splits/README.md).

    python config/base-many-hands/make_splits.py SOURCE=ROOT ...   e.g. CREMMA-MSS-17=/work/data15/CREMMA-MSS-17
"""

from __future__ import annotations

import itertools
import random
import sys
from collections import defaultdict
from pathlib import Path

from loghi_ft.pages.documents import find_pages, read_page

SEED = 1
TARGETS = {"test": 0.05, "val": 0.10}  # shares of the usable lines; train takes the rest
BY_PAGE = {"CREMMA-MSS-17"}             # every manuscript with images holds 15-26% of its lines: too big to hold out
# the same pages as htromance-fr's train manuscript bnf-ms-3160: held out here, they would be trained on there
ALWAYS_TRAIN = {"CREMMA-MSS-18": {"candide-ou-l-optismime-par-voltaire"}}
HERE = Path(__file__).parent / "splits"


def main(args: list[str]) -> None:
    for arg in args:
        name, root = arg.split("=", 1)
        pages = usable_lines(Path(root))
        if name in BY_PAGE:
            splits = split_pages(pages)
        else:
            splits = split_manuscripts(pages, ALWAYS_TRAIN.get(name, set()))
        write_tsv(HERE / f"{name}.tsv", pages, splits)


def usable_lines(root: Path) -> dict[Path, int]:
    """Page (path below `root`) -> lines with text, 0 when its image is missing from the snapshot."""
    pages = {}
    for xml in find_pages([root / "data"]):
        page = read_page(xml)
        lines = sum(1 for line in page.lines if line.text.strip())
        pages[xml.relative_to(root)] = lines if page.image_path.exists() else 0
    return pages


def manuscript(page: Path) -> str:
    return page.parts[1]  # data/<manuscript>/<page>.xml


def split_manuscripts(pages: dict[Path, int], always_train: set[str]) -> dict[Path, str]:
    """Whole manuscripts to test and val, the assignment whose line shares come nearest the targets."""
    lines: dict[str, int] = defaultdict(int)
    for page, n in pages.items():
        lines[manuscript(page)] += n
    total = sum(lines.values())
    # manuscripts without a usable page stay in train: they are what training gains if their images come
    candidates = sorted(m for m, n in lines.items() if n and m not in always_train)
    random.Random(SEED).shuffle(candidates)  # the seed only breaks ties between equally good assignments
    best, best_cost = None, float("inf")
    for choice in itertools.product(("train", "val", "test"), repeat=len(candidates)):
        if "val" not in choice or "test" not in choice:
            continue
        share = {s: sum(lines[m] for m, c in zip(candidates, choice) if c == s) / total for s in TARGETS}
        cost = sum(abs(share[s] - TARGETS[s]) for s in TARGETS)
        if cost < best_cost:
            best, best_cost = dict(zip(candidates, choice)), cost
    return {page: best.get(manuscript(page), "train") for page in pages}


def split_pages(pages: dict[Path, int]) -> dict[Path, str]:
    """Pages drawn in a seeded order: test until it holds 5% of the lines, then val until 10%, then train."""
    total = sum(pages.values())
    order = sorted(p for p, n in pages.items() if n)
    random.Random(SEED).shuffle(order)
    splits, taken = {}, {s: 0 for s in TARGETS}
    for page in order:
        split = next((s for s in ("test", "val") if taken[s] < TARGETS[s] * total), "train")
        taken[split] = taken.get(split, 0) + pages[page]
        splits[page] = split
    return {page: splits.get(page, "train") for page in pages}


def write_tsv(path: Path, pages: dict[Path, int], splits: dict[Path, str]) -> None:
    rows = ["xml\tsplit\tmanuscript\tlines"]
    rows += [f"{p.as_posix()}\t{splits[p]}\t{manuscript(p)}\t{pages[p]}" for p in sorted(pages)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    total = sum(pages.values())
    for split in ("train", "val", "test"):
        n = sum(pages[p] for p in pages if splits[p] == split)
        used = sum(1 for p in pages if splits[p] == split and pages[p])
        ms = sorted({manuscript(p) for p in pages if splits[p] == split and pages[p]})
        print(f"{path.name} {split}: {used} pages with images, {n} lines ({100 * n / total:.1f}%), "
              f"{len(ms)} manuscripts{': ' + ', '.join(ms) if split != 'train' else ''}")


if __name__ == "__main__":
    main(sys.argv[1:])
