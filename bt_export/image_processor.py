"""The image processor settings an export records: a checkpoint's own (preprocessor_config.json or
processor_config.json), else BridgeTower's defaults for its image size. Settings transformers' processor fails on, or
that bt_runtime would refuse or reproduce differently, are refused before any weight loads (docs/export.md,
"Checkpoints")."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import CheckpointError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float: a bool is not a number here, nor is NaN or ±inf (JSON files from Python can hold both)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _stored_image_processor(directory: Path | None) -> tuple[Path | None, dict]:
    """The image processor settings a checkpoint directory holds: preprocessor_config.json (the hub's BridgeTower
    repos, and transformers < 5), or the "image_processor" section of processor_config.json (what transformers 5's
    BridgeTowerProcessor.save_pretrained writes). (None, {}) when neither exists."""
    for name in PROCESSOR_FILES if directory is not None else ():
        path = directory / name
        if not path.is_file():
            continue
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{str(path)!r} is not readable JSON: {err}") from err
        if name == "processor_config.json" and isinstance(stored, dict):
            stored = stored.get("image_processor", {})
        if not isinstance(stored, dict):
            raise CheckpointError(f"{str(path)!r}: expected a JSON object of image processor settings")
        return path, stored
    return None, {}


def image_processor_kwargs(config, directory: Path | None) -> dict:
    """BridgeTowerImageProcessor settings: the checkpoint's own (see _stored_image_processor), else defaults for
    its size. Settings transformers' processor fails on, or that bt_runtime would refuse or reproduce differently,
    are refused here, all in one CheckpointError (docs/export.md, "Checkpoints")."""
    from bt_runtime.manifest.load import MAX_RESIZE_FACTOR

    from .manifest import longest_edge, resample_name

    image_size = config.vision_config.image_size
    kwargs = {"size": {"shortest_edge": image_size}, "crop_size": {"shortest_edge": image_size}, "size_divisor": 32}
    preprocessor_json, stored = _stored_image_processor(directory)
    where = repr(str(preprocessor_json)) if preprocessor_json else "the default image processor settings"
    if stored:
        # Keys every transformers version understands; legacy ones (feature_extractor_type, image_processor_type,
        # do_pad, pad_size, …) describe the same processor and are not needed to reproduce it.
        keep = ("size", "crop_size", "size_divisor", "resample", "image_mean", "image_std", "rescale_factor",
                "do_resize", "do_center_crop", "do_rescale", "do_normalize")
        kwargs.update({k: v for k, v in stored.items() if k in keep and v is not None})
    problems = []
    for key in ("size", "crop_size"):  # transformers writes {"shortest_edge": N}; older files a bare N
        value = kwargs[key]
        if is_int(value) and value >= 1:
            kwargs[key] = {"shortest_edge": value}
        elif not (isinstance(value, dict) and is_int(value.get("shortest_edge")) and value["shortest_edge"] >= 1):
            problems.append(f'{key} {_json(value)}; expected a positive integer or {{"shortest_edge": N}}')
    divisor = kwargs["size_divisor"]
    if not is_int(divisor) or divisor < 1:
        problems.append(f"size_divisor {_json(divisor)} (valid: a positive integer; the resize floors each side to a "
                        "multiple of it)")
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if not isinstance(kwargs.get(flag, True), bool):
            problems.append(f"{flag} {_json(kwargs[flag])} (valid: true or false)")
    if kwargs.get("do_center_crop") is False:
        problems.append("do_center_crop false (the vision tower takes image_size × image_size pixels, which only the "
                        "center crop guarantees: transformers would pass each image at its resized size, which "
                        "bt_runtime refuses; valid: true)")
    if "rescale_factor" in kwargs:  # the manifest records 1.0 when do_rescale is false; bt_runtime needs (0, 1]
        factor = kwargs["rescale_factor"]
        if not is_number(factor) or (kwargs.get("do_rescale", True) and not 0 < factor <= 1):
            problems.append(f"rescale_factor {_json(factor)} (valid: a number in (0, 1], 1/255 for 8-bit pixels)")
    for key in ("image_mean", "image_std"):
        if key not in kwargs:
            continue
        value = kwargs[key]
        if is_number(value):  # transformers applies one number to every channel; the manifest records three
            kwargs[key] = [value] * 3
        values = kwargs[key]
        if not (isinstance(values, list) and len(values) == 3 and all(is_number(v) for v in values)
                and (key == "image_mean" or all(v > 0 for v in values))):
            problems.append(f"{key} {_json(value)} (valid: 3 finite numbers{' > 0' if key == 'image_std' else ''}, "
                            "one per RGB channel, or one number for all three)")
    crop = kwargs["crop_size"].get("shortest_edge") if isinstance(kwargs["crop_size"], dict) else None
    if is_int(crop) and crop != image_size:
        problems.append(f"crop_size {crop} does not match the model's vision_config.image_size {image_size} "
                        f"(the vision tower takes {image_size}×{image_size})")
    shortest = kwargs["size"].get("shortest_edge") if isinstance(kwargs["size"], dict) else None
    if kwargs.get("do_resize", True) is True and is_int(shortest) and is_int(divisor) and divisor >= 1:
        if shortest < divisor:  # every image's short side floors to 0 pixels: transformers raises
            named = "" if preprocessor_json else " (vision_config.image_size)"
            problems.append(f"size shortest_edge {shortest}{named} is below size_divisor {divisor} (the resize floors "
                            "the short side to a multiple of size_divisor: 0; valid: shortest_edge ≥ size_divisor)")
        longest, most = longest_edge(shortest), MAX_RESIZE_FACTOR * image_size  # transformers' long-side cap
        if longest > most:
            problems.append(f"size shortest_edge {shortest} makes a longest edge of {longest}, above the "
                            f"{MAX_RESIZE_FACTOR} × image_size = {most} bt_runtime accepts (valid: shortest_edge ≤ "
                            f"{_largest_shortest_edge(most)})")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    if "resample" in kwargs:
        resample_name(kwargs["resample"])  # an unknown code or name is refused here, before loading weights
    return kwargs


def _largest_shortest_edge(longest: int) -> int:
    """The largest shortest_edge whose long-side cap (manifest.longest_edge) stays ≤ `longest`."""
    from .manifest import longest_edge

    shortest = int((longest + 1) * 800 / 1333) + 1  # int(1333 / 800 · s) ≤ longest ⇔ 1333 / 800 · s < longest + 1
    while longest_edge(shortest) > longest:
        shortest -= 1
    return shortest


def _json(value) -> str:
    """`value` as a JSON file spells it (true, "0.5", NaN), for messages about a JSON file."""
    return json.dumps(value, default=repr)
