"""Simulated VENs for volttron-dr: a fleet of MQTT clients in one process, plus the MQTT harness pieces
(a private Mosquitto with generated certificates, a collecting client) that tests and benchmarks share."""
