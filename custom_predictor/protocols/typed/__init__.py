"""The typed API: the contract's records in, predictions with labels out; the entity lookup by id."""

from custom_predictor.protocols.typed.router import router

__all__ = ["router"]
