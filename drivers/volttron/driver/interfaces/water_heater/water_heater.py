"""Platform-driver interface `water_heater`: electric tank water heater (thermostat, draws, element enable).

Physics in dr_devices; configuration keys in dr_devices_driver.interface.
"""
from dr_devices_driver.interface import SimDevice
from volttron.driver.base.interfaces import BaseInterface, BasicRevert


class WaterHeater(SimDevice, BasicRevert, BaseInterface):
    DEVICE_KIND = "water_heater"
