"""Judge a picture of the built-in world without the model's own CLIP.

Colours and positions come from pixel statistics: the background is the median colour of the
image border, the foreground the pixels far from it, each named by the nearest generator colour;
the position is where the foreground's centre of mass lies. Shapes come from a small CNN trained
only on generator labels (`ShapeClassifier`), looking at the foreground's silhouette, so it does
not care about colour.

Pixel judging needs numpy only; the shape classifier imports torch when it is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:  # torch is imported when the shape classifier is built, not with this module
    from torch import nn

from engine.builtin.drawing import render_scene
from engine.builtin.scenes import COLOURS, SHAPES, sample_pair, sample_single

_NAMES = list(COLOURS)
_RGB = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)

#: A pixel this far (RGB distance) from the background belongs to the foreground; the named
#: colours are at least ~100 apart.
FOREGROUND_DISTANCE = 55.0
#: Fewer foreground pixels than this share of the image means "no object drawn".
MIN_FOREGROUND_SHARE = 0.006
#: The centre of mass within this distance (fraction of the side) of the middle is "centre".
CENTRE_RADIUS = 0.12
SILHOUETTE_SIZE = 32


def name_colour(rgb: npt.ArrayLike) -> str:
    """The generator colour nearest to an RGB triple."""
    distances = np.linalg.norm(_RGB - np.asarray(rgb, dtype=np.float32), axis=1)
    return _NAMES[int(distances.argmin())]


def as_array(image: Image.Image | npt.ArrayLike) -> np.ndarray:
    """(H, W, 3) float32 in 0..255 from a PIL image or a uint8/float array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image, dtype=np.float32)
    return array * 255.0 if array.max() <= 1.0 else array


def background_rgb(image: np.ndarray) -> np.ndarray:
    """Median colour of the 2-pixel border (objects rarely reach the edge)."""
    border = np.concatenate(
        [image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3), image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)]
    )
    return np.median(border, axis=0)


@dataclass(frozen=True)
class Region:
    """What the pixel judge sees in an image or part of one."""

    background: str
    foreground: str | None  # None: nothing stands out from the background
    position: str | None
    silhouette: np.ndarray | None  # (S, S) float in [0, 1], the foreground cropped and scaled
    foreground_rgb: tuple[float, float, float] | None = None


def judge_region(image: np.ndarray, background: np.ndarray | None = None) -> Region:
    """Background, foreground colour, position and silhouette of the one object in `image`."""
    if background is None:
        background = background_rgb(image)
    distance = np.linalg.norm(image - background, axis=2)
    mask = distance > FOREGROUND_DISTANCE
    background_name = name_colour(background)
    if mask.mean() < MIN_FOREGROUND_SHARE:
        return Region(background_name, None, None, None)
    # The colour from the object's core, not its anti-aliased (background-mixed) rim.
    core = distance >= np.percentile(distance[mask], 50)
    rgb = np.median(image[core & mask], axis=0)
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    dx, dy = (xs.mean() + 0.5) / width - 0.5, (ys.mean() + 0.5) / height - 0.5
    if max(abs(dx), abs(dy)) < CENTRE_RADIUS:
        position = "centre"
    elif abs(dx) >= abs(dy):
        position = "left" if dx < 0 else "right"
    else:
        position = "top" if dy < 0 else "bottom"
    red, green, blue = (float(v) for v in rgb)
    return Region(background_name, name_colour(rgb), position, _silhouette(distance, mask, xs, ys), (red, green, blue))


def _silhouette(distance: np.ndarray, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The foreground's soft mask cropped to a square around it, scaled to SILHOUETTE_SIZE."""
    scale = max(float(np.percentile(distance[mask], 90)), 1.0)
    soft = np.clip(distance / scale, 0.0, 1.0)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0) * 1.2 + 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    crop = Image.fromarray((soft * 255).astype(np.uint8)).transform(
        (SILHOUETTE_SIZE, SILHOUETTE_SIZE), Image.Transform.EXTENT, box, resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    return np.asarray(crop, dtype=np.float32) / 255.0


def split_pair(image: np.ndarray, arrangement: str) -> tuple[np.ndarray, np.ndarray]:
    """The left/right (or top/bottom) halves of a two-object picture."""
    if arrangement == "horizontal":
        half = image.shape[1] // 2
        return image[:, :half], image[:, half:]
    half = image.shape[0] // 2
    return image[:half], image[half:]


@dataclass(frozen=True)
class Verdict:
    background: str
    foreground: str | None
    shape: str | None
    position: str | None


class ShapeClassifier:
    """A small CNN over foreground silhouettes, trained on generator labels only."""

    VERSION = 1

    def __init__(self, network: nn.Module) -> None:
        self.network = network.eval()

    @staticmethod
    def _network() -> nn.Sequential:
        import torch
        from torch import nn

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        torch.manual_seed(0)
        return nn.Sequential(
            block(1, 16),
            block(16, 32),
            block(32, 64),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(64 * 4 * 4, len(SHAPES)),
        )

    @classmethod
    def load_or_train(cls, cache: Path | None = None, *, steps: int = 1200, seed: int = 1) -> ShapeClassifier:
        """Load the cached classifier, or train it (about a minute on 2 cores) and cache it."""
        import torch

        if cache is not None and cache.exists():
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if saved.get("version") == cls.VERSION and saved.get("steps") == steps:
                network = cls._network()
                network.load_state_dict(saved["state"])
                return cls(network)
        network = cls._network()
        optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
        rng = np.random.default_rng(seed)
        network.train()
        for _ in range(steps):
            silhouettes, labels = training_silhouettes(rng, 128)
            loss = torch.nn.functional.cross_entropy(
                network(torch.from_numpy(silhouettes)[:, None]), torch.from_numpy(labels)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"version": cls.VERSION, "steps": steps, "state": network.state_dict()}, cache)
        return cls(network)

    def classify(self, silhouettes: list[np.ndarray | None]) -> list[str | None]:
        import torch

        present = [i for i, s in enumerate(silhouettes) if s is not None]
        drawn = [s for s in silhouettes if s is not None]
        names: list[str | None] = [None] * len(silhouettes)
        if present:
            batch = torch.from_numpy(np.stack(drawn))[:, None]
            with torch.no_grad():
                predicted = self.network(batch).argmax(1).tolist()
            for i, p in zip(present, predicted, strict=True):
                names[i] = SHAPES[p]
        return names


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a clean render look like a model's output: softer (via a smaller size) and noisy."""
    size = image.shape[0]
    small = int(rng.choice([size, size // 2, size // 2, (size * 3) // 8]))
    picture = Image.fromarray(image.astype(np.uint8))
    if small != size:
        picture = picture.resize((small, small), Image.Resampling.BILINEAR).resize(
            (size, size), Image.Resampling.BICUBIC
        )
    out = np.asarray(picture, dtype=np.float32)
    noisy = out + rng.normal(0, rng.uniform(0, 12), out.shape)
    return np.clip(noisy, 0, 255)


def training_silhouettes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Silhouettes of degraded generator objects (whole images and halves of pairs) with labels."""
    silhouettes: list[np.ndarray] = []
    labels: list[int] = []
    while len(labels) < n:
        if rng.random() < 0.75:
            scene = sample_single(rng, split="heldout" if rng.random() < 0.1 else "train")
            image = degrade(np.asarray(render_scene(scene, 64)), rng)
            parts = [(image, scene.objects[0].shape)]
        else:
            scene = sample_pair(rng)
            assert scene.arrangement is not None  # two objects always have one
            image = degrade(np.asarray(render_scene(scene, 64)), rng)
            parts = list(zip(split_pair(image, scene.arrangement), (o.shape for o in scene.objects), strict=True))
            background = background_rgb(image)
        for part, shape in parts:
            region = judge_region(part, None if len(parts) == 1 else background)
            if region.silhouette is not None:
                silhouettes.append(region.silhouette)
                labels.append(SHAPES.index(shape))
    return np.stack(silhouettes[:n]).astype(np.float32), np.array(labels[:n], dtype=np.int64)


class SceneChecker:
    """Verdicts on whole pictures: one object, or two along a known arrangement."""

    def __init__(self, shapes: ShapeClassifier) -> None:
        self.shapes = shapes

    def judge(self, images: Iterable[Image.Image | npt.ArrayLike]) -> list[Verdict]:
        regions = [judge_region(as_array(image)) for image in images]
        shapes = self.shapes.classify([r.silhouette for r in regions])
        return [Verdict(r.background, r.foreground, s, r.position) for r, s in zip(regions, shapes, strict=True)]

    def judge_pairs(
        self, images: Iterable[Image.Image | npt.ArrayLike], arrangement: str
    ) -> list[tuple[Verdict, Verdict]]:
        """For each image, the verdict on its left/top half and on its right/bottom half."""
        regions: list[Region] = []
        for image in images:
            array = as_array(image)
            background = background_rgb(array)
            regions.extend(judge_region(half, background) for half in split_pair(array, arrangement))
        shapes = self.shapes.classify([r.silhouette for r in regions])
        verdicts = [Verdict(r.background, r.foreground, s, None) for r, s in zip(regions, shapes, strict=True)]
        return list(zip(verdicts[::2], verdicts[1::2], strict=True))
