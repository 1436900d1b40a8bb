"""Connecfy's broker: the atomic core in Redis (``lua/``) and its typed Python face."""

__version__ = "0.1.0"

from broker.broker import Broker
from broker.settings import Settings

__all__ = ["Broker", "Settings"]
