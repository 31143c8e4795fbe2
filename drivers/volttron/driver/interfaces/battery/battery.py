"""Platform-driver interface `battery`: Stationary battery (state of charge, charge/discharge setpoint, reserve).

Physics in dr_devices; configuration keys in dr_devices_driver.interface.
"""
from dr_devices_driver.interface import SimDevice
from volttron.driver.base.interfaces import BaseInterface, BasicRevert


class Battery(SimDevice, BasicRevert, BaseInterface):
    DEVICE_KIND = "battery"
