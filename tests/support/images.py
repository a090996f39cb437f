"""Small real images for tests (avatars): PNG bytes made with Pillow."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def face_png(colour: tuple[int, int, int], size: int = 200) -> bytes:
    """A square PNG: a light background with a face-like disc of ``colour``."""
    image = Image.new("RGB", (size, size), (235, 232, 245))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * .2, size * .1, size * .8, size * .7), fill=colour)
    draw.ellipse((size * .05, size * .6, size * .95, size * 1.4), fill=colour)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
