"""Shared library of volttron-dr: the one place for topics, RPC names, payload schemas and time helpers.

Every agent of the suite depends on this package; no agent imports another agent.
"""

__version__ = "0.1.0"
