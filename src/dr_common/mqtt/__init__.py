"""The MQTT link of volttron-dr without the platform: topic maps, QoS 1 with store-and-forward, validation of
what VENs send, batched fan-out and fan-in (`core.BridgeCore`).

dr.mqtt runs it as an agent between the bus and a broker; dr.vtn can run it in-process as its own command
link, so a round of commands reaches the broker without a bus hop. It needs paho-mqtt 2.2.0 and gevent
(`volttron-dr-common[mqtt]`).
"""
