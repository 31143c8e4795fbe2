"""A minimal VEN for dr.vtn's integration tests: the DESIGN.md command / ack / telemetry contract on the bus."""

__version__ = "0.1.0"
