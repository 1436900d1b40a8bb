"""Small builders shared by the broker tests: accounts with paired, online devices."""

from __future__ import annotations

from broker import Broker
from broker.records import Account, RegisteredDevice

TO = "+15551234567"


async def pair(broker: Broker, owner: Account | None, name: str = "Pixel 7", *,
               online: bool = True) -> RegisteredDevice:
    """Pair a phone to ``owner`` (None: the platform pool) and, by default, heartbeat it."""
    code = await broker.create_pairing_code(owner)
    device = await broker.register_device(code.code, name)
    if online:
        await broker.heartbeat(device.ref)
    return device


async def self_managed(broker: Broker, email: str = "owner@example.com", devices: int = 1
                       ) -> tuple[Account, list[RegisteredDevice]]:
    account = await broker.create_account(email, "self_managed")
    return account, [await pair(broker, account, f"phone {i}") for i in range(devices)]
