"""The phone app's build and install guide, ``docs/android.md``, served by the dashboard
so the Add Device page can link to it on any install (no documentation site needed).

The wheel carries the file as ``api/dashboard/guides/android.md``; a source checkout
reads it from ``docs/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import markdown

HERE = Path(__file__).parent
ANDROID_GUIDE = ("guides/android.md", "../../docs/android.md")


@cache
def android_guide_html() -> str:
    """The guide as HTML (the project's own Markdown, read once)."""
    source = next(HERE / p for p in ANDROID_GUIDE if (HERE / p).is_file())
    return markdown.markdown(source.read_text(encoding="utf-8"), extensions=["fenced_code", "tables"])
