"""The Add Device QR code: the pairing URI of ``android-client/README.md`` drawn by segno."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import segno


def pairing_uri(server: str, code: str) -> str:
    """``connecfy://pair?server=<base URL>&code=<code>``, what the phone app scans."""
    return "connecfy://pair?" + urlencode({"server": server.rstrip("/"), "code": code})


def pairing_qr_svg(uri: str) -> str:
    """A standalone SVG, black on white with the quiet zone, scaled to fit its box."""
    out = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(
        out,
        kind="svg",
        scale=8,
        border=4,
        dark="#000",
        light="#fff",
        xmldecl=False,
        svgclass="pairing-qr",
        title="Pairing QR code",
    )
    return out.getvalue().decode()
