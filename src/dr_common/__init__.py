"""Shared library of volttron-dr: the one place for topics, RPC names, payload schemas and time helpers,
and the MQTT link (`dr_common.mqtt`) dr.mqtt and dr.vtn run.

Every agent of the suite depends on this package; no agent imports another agent.
"""

__version__ = "0.1.0"
