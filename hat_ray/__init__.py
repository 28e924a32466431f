"""hat-ray: hardware-aware Transformer architecture search (HAT) on Ray."""

from __future__ import annotations

__version__ = "0.1.0"
