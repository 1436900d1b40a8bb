"""Connecfy's broker: the atomic core in Redis (``lua/``) and its typed Python face."""

from broker.broker import Broker
from broker.settings import Settings

__all__ = ["Broker", "Settings"]
__version__ = "0.1.0"
