"""Platform-driver interface `panel`: Smart panel (named circuits with nominal loads, critical flags, switches).

Physics in dr_devices; configuration keys in dr_devices_driver.interface.
"""
from dr_devices_driver.interface import SimDevice
from volttron.driver.base.interfaces import BaseInterface, BasicRevert


class Panel(SimDevice, BasicRevert, BaseInterface):
    DEVICE_KIND = "panel"
