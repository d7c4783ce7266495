"""Instrument protocol, ZeroMQ transport, driver SDK and conformance kit (pyzmq and pydantic only)."""
