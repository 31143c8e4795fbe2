"""dr.vtn's registry holds a site, group or transport string once however many VENs share it."""

from tests.unit.test_vtn_service import Harness


def _text(*parts: str) -> str:
    return "".join(parts)  # a new str object each call, as a parsed payload or a database row gives


def test_registered_vens_share_their_site_group_and_transport_strings(tmp_path):
    h = Harness(tmp_path)
    for ven_id in ("v1", "v2"):
        h.svc.register_ven({"venId": ven_id, "site": _text("site-", "north"), "group": _text("g", "7"),
                            "transport": _text("mq", "tt")})
    a, b = h.svc.vens["v1"], h.svc.vens["v2"]
    assert a.site is b.site and a.group is b.group and a.transport is b.transport
    assert (a.site, a.group, a.transport) == ("site-north", "g7", "mqtt")
    h.svc.update_ven("v2", {"group": _text("g", "8")})
    h.svc.register_ven({"venId": "v3", "group": _text("g", "8")})
    assert h.svc.vens["v2"].group is h.svc.vens["v3"].group == "g8"


def test_vens_loaded_at_start_share_their_strings_and_read_the_same(tmp_path):
    h = Harness(tmp_path)
    for i in range(3):
        h.svc.register_ven({"venId": f"v{i}", "name": f"Home {i}", "site": "s1", "group": "g1", "maxShedKw": 2.5,
                            "transport": "mqtt"})
    before = [h.svc.get_ven(f"v{i}") for i in range(3)]
    h.restart()
    loaded = [h.svc.vens[f"v{i}"] for i in range(3)]
    assert loaded[0].site is loaded[1].site is loaded[2].site
    assert loaded[0].group is loaded[2].group and loaded[0].transport is loaded[2].transport
    assert [h.svc.get_ven(f"v{i}") for i in range(3)] == before
