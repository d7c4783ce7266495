"""Minimal example drivers built on the SDK (they pass the conformance kit)."""

from .toy_furnace import ToyFurnace

__all__ = ["ToyFurnace"]
