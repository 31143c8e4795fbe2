"""Field devices as network services: the `dr_devices` physics behind Modbus TCP (pymodbus) and BACnet/IP
(bacpypes3), started by `scripts/devices` (see cli.py)."""
