"""Drawing the built-in model's scenes (engine/builtin/scenes.py) as pixels, with Pillow.

Each object is a polygon or a few discs drawn at 4× and reduced, so edges are anti-aliased the
same way every time: the training images, the checker's references and the bench's source
images all come from `render_scene`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from engine.builtin.scenes import Scene, SceneObject

SUPERSAMPLE = 4


def _polygon(shape: str) -> list[tuple[float, float]]:
    """Outline of a shape of radius ~1 centred on the origin (y down)."""
    if shape == "square":
        return [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    if shape == "triangle":
        return [
            (math.cos(a) * 1.1, -math.sin(a) * 1.1 + 0.12)
            for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
        ]
    if shape == "star":
        points = []
        for k in range(10):
            r = 1.1 if k % 2 == 0 else 0.46
            a = math.pi / 2 + k * math.pi / 5
            points.append((math.cos(a) * r, -math.sin(a) * r))
        return points
    if shape == "heart":
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 16.5, -y / 16.5 - 0.1))
        return points
    if shape == "cross":
        w = 0.34
        return [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    if shape == "diamond":
        return [(0, -1.15), (0.78, 0), (0, 1.15), (-0.78, 0)]
    raise ValueError(f"no polygon for {shape!r}")


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: int) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def object_mask(obj: SceneObject, size: int) -> Image.Image:
    """Anti-aliased coverage mask ("L") of one object on a `size` × `size` canvas."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    x, y, r = obj.cx * big, obj.cy * big, obj.radius * big
    if obj.shape == "circle":
        _disc(draw, x, y, r, 255)
    elif obj.shape == "ring":
        _disc(draw, x, y, r, 255)
        _disc(draw, x, y, r * 0.55, 0)
    elif obj.shape == "crescent":
        _disc(draw, x, y, r, 255)
        # The bite is taken from the upper right, turned by the object's angle.
        a = math.radians(obj.angle)
        dx, dy = 0.45 * math.cos(a) + 0.2 * math.sin(a), 0.45 * math.sin(a) - 0.2 * math.cos(a)
        _disc(draw, x + dx * r, y + dy * r, r * 0.85, 0)
    else:
        a = math.radians(obj.angle)
        cos, sin = math.cos(a), math.sin(a)
        draw.polygon(
            [(x + r * (px * cos - py * sin), y + r * (px * sin + py * cos)) for px, py in _polygon(obj.shape)],
            fill=255,
        )
    return mask.reduce(SUPERSAMPLE)


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """Draw a scene as an RGB image of `size` × `size` pixels."""
    image = Image.new("RGB", (size, size), scene.background_rgb)
    for obj in scene.objects:
        image.paste(Image.new("RGB", (size, size), obj.rgb), (0, 0), object_mask(obj, size))
    return image


def render_batch(scenes: list[Scene], size: int = 64) -> np.ndarray:
    """(N, size, size, 3) uint8."""
    return np.stack([np.asarray(render_scene(s, size)) for s in scenes])
