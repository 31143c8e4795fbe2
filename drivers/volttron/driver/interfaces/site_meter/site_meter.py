"""Platform-driver interface `site_meter`: Site meter (base load plus every simulated device of the site).

Physics in dr_devices; configuration keys in dr_devices_driver.interface.
"""
from dr_devices_driver.interface import SimDevice
from volttron.driver.base.interfaces import BaseInterface, BasicRevert


class SiteMeter(SimDevice, BasicRevert, BaseInterface):
    DEVICE_KIND = "site_meter"
