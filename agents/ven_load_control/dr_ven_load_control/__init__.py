"""Load-control VEN agent of volttron-dr: sheds a site's loads to a kW target through the platform driver."""

__version__ = "0.1.0"
