"""Write any source in the `folder` layout (for `smsweep data synth`, or to inspect a dataset).

PNG is lossless, so reading the result with the `folder` source gives back the same pixels,
masks, names and class names.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from smsweep.errors import SpecError
from smsweep.method.data import _synthetic, _textures
from smsweep.method.data.base import Source

# `smsweep data synth --kind`: the generated source each kind writes, its name and class range.
SYNTH_KINDS = {
    "shapes": (
        "synthetic",
        _synthetic.SyntheticSource,
        _synthetic.MIN_CLASSES,
        _synthetic.MAX_CLASSES,
    ),
    "textures": (
        "textures",
        _textures.TexturesSource,
        _textures.MIN_CLASSES,
        _textures.MAX_CLASSES,
    ),
}


def write_folder(source: Source, out_dir: Path, n: int | None = None) -> int:
    """Write the first `n` images (all when None) to out_dir/{images,masks}/<name>.png and
    out_dir/classes.txt; return how many images were written. `out_dir` must be new or empty."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SpecError(
            f"{out_dir} exists and is not an empty directory; give a new or empty "
            "directory (nothing is overwritten)"
        )
    count = len(source) if n is None else n
    if not 1 <= count <= len(source):
        raise SpecError(
            f"cannot write {count} images from a source of {len(source)}; use 1..{len(source)}"
        )
    images_dir, masks_dir = out_dir / "images", out_dir / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(exist_ok=True)
    for i in range(count):
        image, mask = source.load(i)
        Image.fromarray(image, mode="RGB").save(images_dir / f"{source.name(i)}.png")
        if mask is not None:
            Image.fromarray(mask, mode="L").save(masks_dir / f"{source.name(i)}.png")
    (out_dir / "classes.txt").write_text("\n".join(source.class_names) + "\n")
    return count


def synth_command(
    out: Path, *, n: int, image_size: int, num_classes: int, seed: int, kind: str = "shapes"
) -> int:
    """`smsweep data synth`: the first `n` generated images of this seed, in folder layout;
    `kind` "shapes" is the `synthetic` source, "textures" the `textures` source."""
    if kind not in SYNTH_KINDS:
        raise SpecError(f"--kind is {kind!r}; use one of {', '.join(sorted(SYNTH_KINDS))}")
    source_name, make_source, low, high = SYNTH_KINDS[kind]
    if n < 1:
        raise SpecError(f"--n is {n}; give the number of images to write (at least 1)")
    if image_size < 16:
        raise SpecError(f"--image-size is {image_size}; use at least 16")
    if not low <= num_classes <= high:
        raise SpecError(
            f"--num-classes is {num_classes}; the {source_name} source has {low}..{high}"
        )
    if seed < 0:
        raise SpecError(f"--seed is {seed}; use a non-negative integer")
    source = make_source(n, image_size, num_classes, seed)
    return write_folder(source, Path(out))
