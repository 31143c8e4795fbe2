"""dr.vtn: the VTN dispatcher of volttron-dr.

The agent module is a thin VOLTTRON shell; registry, lifecycle, allocation, dispatch, metrics and the store
are plain modules that run (and are tested) without a platform.
"""

__version__ = "0.1.0"
