"""The check that decides which screenshots reach docs/images: pixels, not bytes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.support.browser import same_pixels


def test_opaque_pictures_that_differ_are_not_the_same(tmp_path: Path) -> None:
    white = Image.new("RGB", (4, 3), "white")
    dotted = white.copy()
    dotted.putpixel((2, 1), (0, 0, 0))
    white.save(tmp_path / "white.png")
    white.save(tmp_path / "white-again.png", compress_level=0)  # other bytes, same pixels
    dotted.save(tmp_path / "dotted.png")
    Image.new("RGB", (3, 4), "white").save(tmp_path / "turned.png")
    assert same_pixels(tmp_path / "white.png", tmp_path / "white-again.png")
    assert not same_pixels(tmp_path / "white.png", tmp_path / "dotted.png")
    assert not same_pixels(tmp_path / "white.png", tmp_path / "turned.png")
