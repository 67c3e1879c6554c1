"""Seeded image–caption pairs of coloured shapes, captions from a small grammar, one-attribute hard negatives.

Scope: the data the `shapes` reference checkpoint is trained and judged on (numpy + Pillow only, no torch, so
bt-bench, scripts and tests can use it). Stable API:

    make_samples(seed, count, *, image_size=64, split="train") -> list[Sample]   # Sample: image, caption, scene
    render(scene, rng, image_size=64) -> PIL.Image.Image
    hard_negatives(sample, rng=None, kinds=None) -> list[(kind, caption)]          # kinds from NEGATIVE_KINDS
    attribute_words(caption) -> list[(word_index, category)]                        # words MLM is judged on
    mask_attribute_words(caption, rng, count=1, mask_token="<mask>") -> (masked, [(word_index, word, category)])
    parse_caption(caption) -> Scene                                                 # inverse of Scene.caption()
    Scene.canonical() -> Scene   # "B right of A" → "A left of B"; equal canonical scenes = same description

Grammar. A scene is one group with a position, or two groups and a relation between them:
    "two small red circles on the left"          group := count size colour shape(s)
    "a large blue star above a small green square"
count ∈ a/two/three, size ∈ small/large, 5 colours, 4 shapes; position ∈ on the left/right, at the top/bottom
(every object of the group in that half of the image); relation ∈ left of/right of/above/below (the first group
in one half, the second in the opposite half); object centres are free (GRID_CELLS: on a grid of cells instead,
not shipped). Backgrounds are plain, noisy, striped, checkered or gradients in muted grey tones, with grey
line/dot clutter; object colours are jittered.

Splits. Every sample is drawn from its own generator seeded by (split, seed, index): a split's stream is a pure
function of its seed, `make_samples(s, n)` is a prefix of `make_samples(s, n + k)`, and splits never share a
stream. "train" and "heldout" follow the same distribution; neither ever contains an object whose (colour, shape)
is in HELDOUT_COMBOS. "heldout_combos" scenes always contain one (reported separately).

Hard negatives change exactly one attribute of the scene and are false for the image: colour, shape, size, count
(of one group), position (to the opposite half; one-group scenes), relation (to its opposite; two-group scenes),
binding (the two groups' colours swapped; two-group scenes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

COUNTS = {1: "a", 2: "two", 3: "three"}
SIZES = ("small", "large")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40),
           "purple": (165, 60, 210)}
SHAPES = ("circle", "square", "triangle", "star")
POSITIONS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}  # → its opposite
OPPOSITE_POSITION = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
HELDOUT_COMBOS = (("red", "star"), ("blue", "triangle"), ("yellow", "circle"))  # (colour, shape) never trained on
NEGATIVE_KINDS = ("colour", "shape", "size", "count", "position", "relation", "binding")
SPLITS = {"train": 0, "heldout": 1, "heldout_combos": 2}
GRAMMAR_WORDS = tuple(dict.fromkeys(
    [*COUNTS.values(), *SIZES, *COLOURS, *SHAPES, *(s + "s" for s in SHAPES), "on", "at", "the", "of",
     *POSITIONS, "above", "below"]))

RADIUS = {"small": 0.095, "large": 0.145}  # × image_size: small shapes ~12 px across at 64 px, size still clear
RELATION_PROBABILITY = 0.5  # two-group scenes: relation and binding negatives need them
MAX_COUNT_WITH_RELATION = 2  # the first group of a two-group scene; the second always has one object
SUPERSAMPLE = 4  # shapes are drawn at 4× and box-filtered down: anti-aliased edges at any image size
RADIUS_JITTER = 0.1  # each object's radius × U(1 - j, 1 + j)
# extent of each shape in units of the object's radius (square: half side; triangle, star: circumradius)
SHAPE_EXTENT = {"circle": 1.0, "square": 0.88, "triangle": 1.2, "star": 1.15}
STAR_INNER = 0.45  # inner / outer radius of the star
# GRID_CELLS > 0: object centres at the centres of a GRID_CELLS × GRID_CELLS grid of cells (± CELL_JITTER px; 4 =
# a 16-px grid at 64 px, the patch-16 model's patches), free only where no grid placement exists. With free sub-patch
# offsets a 3-layer patch-16 ViT tells circle from square and star from triangle (equal areas) at chance; on the
# grid 1,400- and 2,400-step runs reached shape ≥ 0.996 but position and relation stayed at chance, so the shipped
# weights and their data keep free centres (0). docs/shapes.md, benchmarks/results/shapes-train-grid-seed0*.json
GRID_CELLS = 0
GRID_CELLS_ALIGNED = 4  # make_samples(grid_fraction=…): the grid a share of training scenes is drawn on
CELL_JITTER = 1.5
ALIGNED_TRIES = 8  # grid placements tried before free ones


@dataclass(frozen=True)
class Group:
    count: int
    size: str
    colour: str
    shape: str

    def words(self) -> str:
        return f"{COUNTS[self.count]} {self.size} {self.colour} {self.shape}{'s' if self.count > 1 else ''}"


@dataclass(frozen=True)
class Scene:
    groups: tuple[Group, ...]  # one group (with `position`) or two (with `relation`: groups[0] relation groups[1])
    position: str | None = None  # left | right | top | bottom
    relation: str | None = None  # left of | right of | above | below

    def canonical(self) -> Scene:
        """The same description in one word order ("B right of A" → "A left of B"): equal canonical scenes
        describe the same thing (used as relevance in retrieval)."""
        flipped = {"right of": "left of", "below": "above"}
        if self.relation in flipped:
            return Scene(self.groups[::-1], relation=flipped[self.relation])
        return self

    def caption(self) -> str:
        if self.relation is None:
            return f"{self.groups[0].words()} {POSITIONS[self.position]}"
        return f"{self.groups[0].words()} {self.relation} {self.groups[1].words()}"


@dataclass
class Sample:
    image: Image.Image  # RGB, image_size × image_size
    caption: str
    scene: Scene
    split: str
    seed: int
    index: int


class CaptionError(ValueError):
    pass


def _check(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}: {value!r}; valid: {list(valid)}")


def make_samples(seed: int, count: int, *, image_size: int = 64, split: str = "train",
                 grid_fraction: float = 0.0) -> list[Sample]:
    """`count` samples of `split`, a pure function of (split, seed, index, grid_fraction) per sample.
    grid_fraction: the share of scenes whose object centres go on the GRID_CELLS_ALIGNED grid (a training
    curriculum, bt_export.shapes.train; 0 draws nothing extra, so the stream is the same as without it)."""
    _check("split", split, SPLITS)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: {seed!r}; expected an integer >= 0")
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count: {count!r}; expected an integer >= 0")
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"image_size: {image_size!r}; expected an integer >= 32")
    if not 0.0 <= grid_fraction <= 1.0:
        raise ValueError(f"grid_fraction: {grid_fraction!r}; expected a number in [0, 1]")
    samples = []
    for index in range(count):
        rng = np.random.default_rng([SPLITS[split], int(seed), index])
        scene = sample_scene(rng, split)
        cells = GRID_CELLS_ALIGNED if grid_fraction and rng.random() < grid_fraction else GRID_CELLS
        image = render(scene, rng, image_size, cells=cells)
        samples.append(Sample(image, scene.caption(), scene, split, int(seed), index))
    return samples


def _group(rng: np.random.Generator, split: str, max_count: int, force_heldout: bool) -> Group:
    while True:
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        if ((colour, shape) in HELDOUT_COMBOS) == force_heldout:
            break
        if not force_heldout and split == "heldout_combos":
            break  # the other group of a held-out-combo scene may be anything
    return Group(int(rng.integers(1, max_count + 1)), str(rng.choice(SIZES)), colour, shape)


def sample_scene(rng: np.random.Generator, split: str = "train") -> Scene:
    """A random scene of `split` (captions only; `render` draws it)."""
    _check("split", split, SPLITS)
    force = split == "heldout_combos"
    if rng.random() >= RELATION_PROBABILITY:
        return Scene((_group(rng, split, 3, force),), position=str(rng.choice(list(POSITIONS))))
    while True:
        first = _group(rng, split, MAX_COUNT_WITH_RELATION, force and rng.random() < 0.5)
        second = _group(rng, split, 1, force and (first.colour, first.shape) not in HELDOUT_COMBOS)
        if first.colour != second.colour:  # binding negatives swap the two colours
            return Scene((first, second), relation=str(rng.choice(list(RELATIONS))))


# ---- rendering -------------------------------------------------------------------------------------------------

def _half(where: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in [0, 1] of the half named by a position or relation side."""
    return {"left": (0, 0, .5, 1), "right": (.5, 0, 1, 1), "top": (0, 0, 1, .5), "bottom": (0, .5, 1, 1)}[where]


def _regions(scene: Scene) -> list[tuple[float, float, float, float]]:
    if scene.relation is None:
        return [_half(scene.position)]
    first = {"left of": "left", "right of": "right", "above": "top", "below": "bottom"}[scene.relation]
    return [_half(first), _half(OPPOSITE_POSITION[first])]


def _place(rng, scene: Scene, size: int, tries: int = 64, cells: int = 0) -> list[tuple[Group, float, float, float]]:
    """(group, cx, cy, r) per object in pixels: inside its region, no two objects touching, centres at the centres
    of a cells × cells grid if `cells` (clipped into the region); [] if it fails."""
    placed: list[tuple[Group, float, float, float]] = []
    for group, (x0, y0, x1, y1) in zip(scene.groups, _regions(scene), strict=False):
        for _ in range(group.count):
            r = RADIUS[group.size] * size * rng.uniform(1 - RADIUS_JITTER, 1 + RADIUS_JITTER)
            cx = rng.uniform(x0 * size + r + 1, x1 * size - r - 1, tries)  # (T,) candidate centres
            cy = rng.uniform(y0 * size + r + 1, y1 * size - r - 1, tries)
            if cells:
                cell = size / cells
                cx = np.clip((np.floor(cx / cell) + 0.5) * cell + rng.uniform(-CELL_JITTER, CELL_JITTER, tries),
                             x0 * size + r + 1, x1 * size - r - 1)
                cy = np.clip((np.floor(cy / cell) + 0.5) * cell + rng.uniform(-CELL_JITTER, CELL_JITTER, tries),
                             y0 * size + r + 1, y1 * size - r - 1)
            ok = np.ones(tries, dtype=bool)
            for _, px, py, pr in placed:
                ok &= (cx - px) ** 2 + (cy - py) ** 2 > (r + pr + 1.5) ** 2
            if not ok.any():
                return []
            first = int(np.argmax(ok))
            placed.append((group, float(cx[first]), float(cy[first]), r))
    return placed


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float: muted grey tones, plain / noise / stripes / checker / gradient."""
    base = rng.uniform(25, 175)
    tint = rng.uniform(-10, 10, size=3)
    y, x = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(5)
    if kind == 0:
        grey = np.zeros((size, size))
    elif kind == 1:
        grey = rng.normal(0, rng.uniform(8, 22), (size, size))
    elif kind == 2:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.25)
        grey = 18 * np.sign(np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period))
    elif kind == 3:
        cells = rng.integers(4, 10)
        grey = 15 * ((np.floor(x * cells) + np.floor(y * cells)) % 2 * 2 - 1)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        grey = 40 * ((x - .5) * np.cos(angle) + (y - .5) * np.sin(angle))
    grey = grey + rng.normal(0, 4, (size, size))
    return np.clip(base + grey[..., None] + tint, 0, 255)


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """Grey lines and dots, never a colour a caption names."""
    for _ in range(rng.integers(0, 6)):
        grey = int(rng.uniform(60, 200))
        x, y = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            dx, dy = rng.uniform(-0.3, 0.3, 2) * size
            draw.line([(x, y), (x + dx, y + dy)], fill=(grey, grey, grey), width=1)
        else:
            r = rng.uniform(0.5, 1.5)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(grey, grey, grey))


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]] | None:
    r *= SHAPE_EXTENT[shape]
    if shape == "triangle":
        angles = turn + np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        return [(cx + r * np.cos(a), cy - r * np.sin(a)) for a in angles]
    if shape == "star":
        angles = turn + np.pi / 2 + np.pi * np.arange(10) / 5
        radii = np.where(np.arange(10) % 2 == 0, r, STAR_INNER * r)
        return [(cx + q * np.cos(a), cy - q * np.sin(a)) for q, a in zip(radii, angles, strict=True)]
    return None


def render(scene: Scene, rng: np.random.Generator, image_size: int = 64, cells: int | None = None) -> Image.Image:
    """Draw `scene` on a random background (RGB, image_size × image_size); `cells`: object centres on a grid of
    cells × cells (None: GRID_CELLS)."""
    cells = GRID_CELLS if cells is None else cells
    background = Image.fromarray(_background(rng, image_size).astype(np.uint8), "RGB")
    _clutter(rng, ImageDraw.Draw(background), image_size)
    placed, attempt = [], 0
    while not placed:  # a crowded draw (three large objects in one half): draw positions again, then off the grid
        placed = _place(rng, scene, image_size, cells=cells if attempt < ALIGNED_TRIES else 0)
        attempt += 1
    big = image_size * SUPERSAMPLE
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for group, cx, cy, r in placed:
        colour = tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in COLOURS[group.colour]) + (255,)
        cx, cy, r = cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE
        points = _polygon(group.shape, cx, cy, r, rng.uniform(-0.15, 0.15))
        if group.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif group.shape == "square":
            side = r * SHAPE_EXTENT["square"]
            draw.rectangle([cx - side, cy - side, cx + side, cy + side], fill=colour)
        else:
            draw.polygon(points, fill=colour)
    layer = layer.resize((image_size, image_size), Image.Resampling.BOX)
    return Image.alpha_composite(background.convert("RGBA"), layer).convert("RGB")


# ---- negatives, parsing, attribute words ------------------------------------------------------------------------

def _swap_group(scene: Scene, index: int, group: Group) -> Scene:
    groups = list(scene.groups)
    groups[index] = group
    return replace(scene, groups=tuple(groups))


def _has_combo(groups) -> bool:
    return any((g.colour, g.shape) in HELDOUT_COMBOS for g in groups)


def negative_scene(scene: Scene, kind: str, rng: np.random.Generator, avoid_combos: bool = True) -> Scene | None:
    """`scene` with exactly one attribute changed so that its caption is false for the image; None where `kind`
    does not apply (position needs one group; relation and binding need two). `avoid_combos`: never name a
    HELDOUT_COMBOS pair (else training would learn "red star" as a sign of a false caption)."""
    _check("kind", kind, NEGATIVE_KINDS)
    if kind == "position":
        return None if scene.position is None else replace(scene, position=OPPOSITE_POSITION[scene.position])
    if kind == "relation":
        return None if scene.relation is None else replace(scene, relation=RELATIONS[scene.relation])
    if kind == "binding":
        if len(scene.groups) < 2:
            return None
        a, b = scene.groups
        swapped = (replace(a, colour=b.colour), replace(b, colour=a.colour))
        return None if avoid_combos and _has_combo(swapped) else replace(scene, groups=swapped)
    # count: the first group only in two-group scenes (the second always has one object; a plural there would
    # mark the caption false by its form alone)
    index = 0 if kind == "count" else int(rng.integers(len(scene.groups)))
    group = scene.groups[index]
    field = {"colour": "colour", "shape": "shape", "size": "size", "count": "count"}[kind]
    current = getattr(group, field)
    options = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES),
               "count": list(range(1, 4 if scene.relation is None else 3))}[kind]
    others = [g for i, g in enumerate(scene.groups) if i != index]
    choices = [v for v in options if v != current and replace(group, **{field: v}) not in others
               and not (avoid_combos and _has_combo([replace(group, **{field: v})]))]
    return _swap_group(scene, index, replace(group, **{field: choices[int(rng.integers(len(choices)))]}))


def hard_negatives(sample: Sample, rng: np.random.Generator | None = None,
                   kinds: tuple[str, ...] = NEGATIVE_KINDS) -> list[tuple[str, str]]:
    """One false caption per kind in `kinds` that applies to the sample's scene, as (kind, caption). Without
    `rng` the choice is a function of the sample (its split, seed and index)."""
    if rng is None:
        rng = np.random.default_rng([SPLITS[sample.split], sample.seed, sample.index, 1])
    negatives = []
    for kind in kinds:
        scene = negative_scene(sample.scene, kind, rng, avoid_combos=sample.split != "heldout_combos")
        if scene is not None:
            negatives.append((kind, scene.caption()))
    return negatives


_COUNT_WORDS = {word: count for count, word in COUNTS.items()}
_POSITION_WORDS = {phrase: where for where, phrase in POSITIONS.items()}


def _parse_group(words: list[str], caption: str) -> Group:
    if len(words) != 4:
        raise CaptionError(f"caption {caption!r}: expected 'count size colour shape', got {' '.join(words)!r}")
    count_word, size, colour, shape = words
    count = _COUNT_WORDS.get(count_word)
    singular = shape[:-1] if count and count > 1 and shape.endswith("s") else shape
    if count is None or size not in SIZES or colour not in COLOURS or singular not in SHAPES or (
            (count > 1) != (shape != singular)):
        raise CaptionError(f"caption {caption!r}: {' '.join(words)!r} is not a group of this grammar")
    return Group(count, size, colour, singular)


def parse_caption(caption: str) -> Scene:
    """The Scene a caption of this grammar describes; CaptionError (a ValueError) for any other text."""
    words = caption.split()
    if len(words) == 7 and " ".join(words[4:]) in _POSITION_WORDS:
        return Scene((_parse_group(words[:4], caption),), position=_POSITION_WORDS[" ".join(words[4:])])
    for length in (1, 2):
        relation = " ".join(words[4:4 + length])
        if relation in RELATIONS and len(words) == 8 + length and len(relation.split()) == length:
            return Scene((_parse_group(words[:4], caption), _parse_group(words[4 + length:], caption)),
                         relation=relation)
    raise CaptionError(f"caption {caption!r} is not of this grammar (see bt_export.shapes.data)")


def attribute_words(caption: str) -> list[tuple[int, str]]:
    """(word index, category) of every attribute word: count, size, colour, shape, position, relation."""
    scene = parse_caption(caption)
    found = []
    starts = [0] if scene.relation is None else [0, 5 + (scene.relation in ("left of", "right of"))]
    for start in starts:
        found += [(start, "count"), (start + 1, "size"), (start + 2, "colour"), (start + 3, "shape")]
    found.append((6 if scene.relation is None else 4, "position" if scene.relation is None else "relation"))
    return sorted(found)


def mask_attribute_words(caption: str, rng: np.random.Generator, count: int = 1, mask_token: str = "<mask>",
                         ) -> tuple[str, list[tuple[int, str, str]]]:
    """`caption` with `count` random attribute words replaced by `mask_token`: (masked, [(index, word, category)])."""
    words = caption.split()
    candidates = attribute_words(caption)
    if not 1 <= count <= len(candidates):
        raise ValueError(f"count: {count}; this caption has {len(candidates)} attribute words")
    chosen = sorted(rng.choice(len(candidates), size=count, replace=False))
    masked = []
    for c in chosen:
        index, category = candidates[c]
        masked.append((index, words[index], category))
        words[index] = mask_token
    return " ".join(words), masked
