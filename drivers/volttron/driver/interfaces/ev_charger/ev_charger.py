"""Platform-driver interface `ev_charger`: EV charger with a plugged-in vehicle (SoC, power limit, departure).

Physics in dr_devices; configuration keys in dr_devices_driver.interface.
"""
from dr_devices_driver.interface import SimDevice
from volttron.driver.base.interfaces import BaseInterface, BasicRevert


class EvCharger(SimDevice, BasicRevert, BaseInterface):
    DEVICE_KIND = "ev_charger"
