"""volttron-dr status page and REST API (identity dr.web)."""
__version__ = "0.1.0"
