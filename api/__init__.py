"""Connecfy's HTTP layer (Litestar): authenticates, validates and calls one broker operation."""
