"""Physics of the simulated demand-response devices (no VOLTTRON import): EV charger, water heater, HVAC, smart
panel, battery and the site meter that sums them."""
from .factory import DEVICE_TYPES, build_device
from .model import DeviceModel
from .points import ConfigError, PointError, PointSpec
from .site import SiteModel, forget_sites, get_site

__all__ = [
    "DEVICE_TYPES",
    "ConfigError",
    "DeviceModel",
    "PointError",
    "PointSpec",
    "SiteModel",
    "build_device",
    "forget_sites",
    "get_site",
]
