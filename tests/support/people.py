"""What the dashboard tests do as people and phones: fresh addresses, a simulated phone
redeeming the code it was shown, the check that row buttons say which row, and the
QR code read as a phone camera reads it."""

from __future__ import annotations

import io
import uuid
from typing import Any

from tests.support.browser import Person
from tests.support.e2e_server import expect
from tests.support.http_world import Phone, World


def email(prefix: str = "web") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def register(world: World, code: str, name: str) -> Phone:
    """The simulated phone redeems the code it was shown, over HTTP."""
    registered = expect(
        world.api().post(
            "/api/devices/register/", json={"code": code, "device_name": name, "phone_number": "+15550001111"}
        ),
        201,
    )
    token = registered["device_token"]
    return Phone(registered["device_id"], token, name, world.api(**{"X-Device-Token": token}))


def paired(person: Person, world: World, name: str) -> Phone:
    """A phone paired with a code the person made on the dashboard's API, online."""
    status, code = person.api("POST", "/api/devices/pairing-codes/", None)
    assert status == 201
    phone = register(world, code["code"], name)
    expect(phone.heartbeat({"battery": 80}), 200)
    return phone


def duplicate_button_names(page: Any) -> list[str]:
    """Buttons in the main part of the page that a screen reader would announce alike."""
    names = page.evaluate("""() => [...document.querySelectorAll("main button")]
        .map((b) => b.getAttribute("aria-label") || b.textContent.trim())""")
    return sorted({n for n in names if names.count(n) > 1})


def decode_qr(png: bytes) -> str:
    """The text of the one QR code in a PNG (zxing-cpp reads it as a phone camera would)."""
    import zxingcpp
    from PIL import Image

    [barcode] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    return barcode.text
