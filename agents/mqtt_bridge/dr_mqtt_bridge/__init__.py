"""volttron-dr MQTT bridge agent (dr.mqtt)."""

__version__ = "0.1.0"
