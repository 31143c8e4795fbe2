"""Platform-driver interface `hvac`: Single-zone cooling (RC zone model, outdoor profile, variable-speed compressor).

Physics in dr_devices; configuration keys in dr_devices_driver.interface.
"""
from dr_devices_driver.interface import SimDevice
from volttron.driver.base.interfaces import BaseInterface, BasicRevert


class Hvac(SimDevice, BasicRevert, BaseInterface):
    DEVICE_KIND = "hvac"
