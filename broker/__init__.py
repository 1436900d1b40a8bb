"""Connecfy's broker: the atomic core in Redis (``lua/``) and its typed Python face."""

__version__ = "0.1.0"

from broker.broker import Broker  # noqa: E402 - after __version__, which modules it imports read
from broker.settings import Settings  # noqa: E402

__all__ = ["Broker", "Settings"]
