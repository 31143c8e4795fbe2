"""Every VIP identity, bus topic, MQTT topic template and RPC name of volttron-dr.

Grep a constant's name to find where its messages are produced and consumed.
"""

from __future__ import annotations

# --- VIP identities -------------------------------------------------------------------------------
VTN_IDENTITY = "dr.vtn"
MQTT_BRIDGE_IDENTITY = "dr.mqtt"
HISTORIAN_IDENTITY = "platform.historian"
WEB_IDENTITY = "dr.web"
DRIVER_IDENTITY = "platform.driver"
VEN_IDENTITY_PREFIX = "dr.ven."


def ven_identity(ven_id: str) -> str:
    """VIP identity of the load-control VEN agent of one venId."""
    return f"{VEN_IDENTITY_PREFIX}{ven_id}"


OADR_VEN_IDENTITY_PREFIX = "dr.oadr."


def oadr_ven_identity(ven_id: str) -> str:
    """VIP identity of the OpenADR VEN agent (dr.oadr.<venId>) in front of dr.ven.<venId>."""
    return f"{OADR_VEN_IDENTITY_PREFIX}{ven_id}"


# --- VOLTTRON bus topics --------------------------------------------------------------------------
# Per-VEN topics (one message per VEN): used between agents on the same platform.
BUS_CMD = "dr/cmd/{venId}"              # dr.vtn (or dr.mqtt on a VEN platform) -> dr.ven.<venId>
BUS_ACK = "dr/ack/{venId}"              # dr.ven.<venId> -> dr.vtn (or dr.mqtt on a VEN platform)
BUS_TELEMETRY = "dr/telemetry/{venId}"  # dr.ven.<venId> -> dr.vtn, dr.mqtt, historian
BUS_CMD_PREFIX = "dr/cmd/"
BUS_ACK_PREFIX = "dr/ack/"
BUS_TELEMETRY_PREFIX = "dr/telemetry/"

# Batched topics (one bus message carrying many items): a VOLTTRON publish costs milliseconds, so
# per-VEN fan-out and fan-in for remote VENs happen in the bridge and the broker.
BUS_CMD_BATCH = "dr/batch/cmd"              # dr.vtn -> dr.mqtt: {"commands": [command, ...]}
BUS_ACK_BATCH = "dr/batch/ack"              # dr.mqtt -> dr.vtn: {"items": [ack, ...]}
BUS_TELEMETRY_BATCH = "dr/batch/telemetry"  # dr.mqtt -> dr.vtn: {"items": [telemetry, ...]}
BUS_STATUS_BATCH = "dr/batch/status"        # dr.mqtt -> dr.vtn: {"items": [{"venId", "online"}, ...]}
# Commands dr.vtn sent over its own MQTT link (`commandLink`), for the record only (historian, status page);
# no bridge fans them out: {"commands": [command, ...]}, compacted as on dr/batch/cmd. With the link, dr.vtn
# publishes what it takes from the broker on dr/batch/ack, dr/batch/telemetry and dr/batch/status, as dr.mqtt would.
BUS_CMD_SENT = "dr/sent/cmd"

# Event lifecycle notifications from dr.vtn (status page, historian).
BUS_EVENT_STATUS = "dr/event/{eventId}"

DEVICES_PREFIX = "devices/"
DR_PREFIX = "dr/"  # every volttron-dr bus topic starts with it (the historian records them all)


def bus_cmd(ven_id: str) -> str:
    return BUS_CMD.format(venId=ven_id)


def bus_ack(ven_id: str) -> str:
    return BUS_ACK.format(venId=ven_id)


def bus_telemetry(ven_id: str) -> str:
    return BUS_TELEMETRY.format(venId=ven_id)


# Topics the historian stores (not published on the bus): one per field of a per-VEN message, and the
# bridge's status items per VEN.
HIST_STATUS = "dr/status/{venId}"        # an item of dr/batch/status, stored per VEN
HIST_STATUS_PREFIX = "dr/status/"


def hist_status(ven_id: str) -> str:
    """`dr/status/<venId>`: where the historian stores a VEN's status items."""
    return HIST_STATUS.format(venId=ven_id)


def field_topic(base: str, field: str) -> str:
    """`<base>/<field>`: the stored topic of one field of a per-VEN message (e.g. of `dr/ack/<venId>`)."""
    return f"{base}/{field}"


def telemetry_field(ven_id: str, field: str) -> str:
    """`dr/telemetry/<venId>/<field>` (e.g. usedPowerKw): the stored topic of one telemetry field."""
    return field_topic(bus_telemetry(ven_id), field)


def device_all_topic(device_path: str) -> str:
    """`devices/<site>/<device>/all`, the platform driver's publish of every point of a device."""
    return f"{DEVICES_PREFIX}{device_path.strip('/')}/all"


def ven_id_from_topic(topic: str, prefix: str) -> str | None:
    """The venId at the end of a per-VEN topic (bus or MQTT), or None when the topic does not match."""
    if not topic.startswith(prefix):
        return None
    ven_id = topic[len(prefix):]
    return ven_id if ven_id and "/" not in ven_id else None


# --- MQTT topic templates (the seeds' contract) ---------------------------------------------------
MQTT_CMD = "ven/cmd/{venId}"              # VTN -> VEN
MQTT_ACK = "ven/ack/{venId}"              # VEN -> VTN
MQTT_TELEMETRY = "ven/telemetry/{venId}"  # VEN -> VTN, every 5 s
MQTT_METER = "oadr/meter/{venId}"         # VEN -> VTN, every 5 s (same payload as telemetry)
MQTT_STATUS = "ven/status/{venId}"        # last will / birth: {"venId", "online": bool, "ts"}


def mqtt_topic(template: str, ven_id: str) -> str:
    return template.format(venId=ven_id)


# --- RPC names ------------------------------------------------------------------------------------
class VtnRpc:
    """RPCs exported by dr.vtn."""

    REGISTER_VEN = "register_ven"
    UPDATE_VEN = "update_ven"
    LIST_VENS = "list_vens"
    GET_VEN = "get_ven"
    CREATE_EVENT = "create_event"
    UPDATE_EVENT = "update_event"
    STOP_EVENT = "stop_event"
    CANCEL_EVENT = "cancel_event"
    GET_EVENT = "get_event"
    LIST_EVENTS = "list_events"
    EVENT_METRICS = "event_metrics"
    HEALTH = "health"
    # OpenADR 3.1 objects (dr.web's /openadr3/3.1.0 calls them; see web/dr_web/oadr3/README.md)
    OADR_SEARCH = "oadr_search"
    OADR_GET = "oadr_get"
    OADR_CREATE = "oadr_create"
    OADR_UPDATE = "oadr_update"
    OADR_DELETE = "oadr_delete"
    OADR_NOTIFIERS = "oadr_notifiers"          # the spec's notifiersResponse (webhooks, the MQTT binding)
    OADR_MQTT_TOPICS = "oadr_mqtt_topics"      # the spec's notifierTopicsResponse of notifiers/mqtt/topics/...
    OADR_CLIENTS = "oadr_clients"              # dr.web -> dr.vtn: the OpenADR clients of its config (no secrets)


class VenRpc:
    """RPCs exported by dr.ven.<venId>."""

    STATUS = "status"
    OPT_OUT = "opt_out"
    OVERRIDE = "override"
    HANDLE_COMMAND = "handle_command"
    HEALTH = "health"


class OadrVenRpc:
    """RPCs exported by dr.oadr.<venId> (the OpenADR VEN agent)."""

    STATUS = "status"
    HEALTH = "health"
    POLL_NOW = "poll_now"


class BridgeRpc:
    """RPCs exported by dr.mqtt."""

    SEND_BATCH = "send_batch"
    STATUS = "status"
    HEALTH = "health"


class HistorianRpc:
    """RPCs of platform.historian (VOLTTRON's historian API plus M&V)."""

    QUERY = "query"
    GET_TOPIC_LIST = "get_topic_list"
    GET_TOPICS_BY_PATTERN = "get_topics_by_pattern"
    GET_TOPICS_METADATA = "get_topics_metadata"
    EVENT_PERFORMANCE = "event_performance"
    BASELINE = "baseline"
    BASELINE_ACCURACY = "baseline_accuracy"
    BASELINE_PRESETS = "baseline_presets"
    HEALTH = "health"


class WebRpc:
    """RPCs exported by dr.web."""

    HEALTH = "health"
    LATEST_TELEMETRY = "latest_telemetry"


class DriverRpc:
    """The legacy platform.driver RPC API, used to shed and restore device points."""

    GET_POINT = "get_point"
    SET_POINT = "set_point"
    REVERT_POINT = "revert_point"
    REVERT_DEVICE = "revert_device"
    SCRAPE_ALL = "scrape_all"
    SET_MULTIPLE_POINTS = "set_multiple_points"
    GET_MULTIPLE_POINTS = "get_multiple_points"
