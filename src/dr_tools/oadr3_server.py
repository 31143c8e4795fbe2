"""The OpenADR 3.1 VTN in one process, for tests and benchmarks: dr.web's app with the OpenADR blueprint and
the real dr.vtn service behind it (`dr_tools.webharness.WebHarness`), served over real HTTP on a free port of
127.0.0.1, with a business-logic client and two VEN clients."""

from __future__ import annotations

import threading
from pathlib import Path

from werkzeug.serving import make_server

from dr_tools.webharness import WebHarness
from dr_web.oadr3 import BASE_PATH
from dr_web.oadr3.auth import Oadr3Config, TokenIssuer
from dr_web.oadr3.blueprint import install

BL = ("demo-bl", "bl-secret-for-tests-1")
VEN1 = ("ven-client-1", "ven1-secret-for-tests")
VEN2 = ("ven-client-2", "ven2-secret-for-tests")


class Oadr3Server:
    """Served in a thread of its own, one request at a time (as the in-process dr.vtn service expects);
    `base` is the API's URL."""

    def __init__(self, folder: Path) -> None:
        self.web = WebHarness(folder)
        config = Oadr3Config.model_validate({"clients": [
            {"clientId": BL[0], "clientSecret": BL[1], "role": "bl"},
            {"clientId": VEN1[0], "clientSecret": VEN1[1], "role": "ven", "venName": "ven-1"},
            {"clientId": VEN2[0], "clientSecret": VEN2[1], "role": "ven", "venName": "ven-2"}]})
        self.issuer = TokenIssuer(config)
        install(self.web.app, self.issuer, self.web.gateway, "dr.vtn", 5.0)
        ready = threading.Event()

        def serve() -> None:  # made and served in one thread (gevent sockets, once VOLTTRON is loaded, stay put)
            self.http = make_server("127.0.0.1", 0, self.web.app, threaded=False)
            ready.set()
            self.http.serve_forever(poll_interval=0.05)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("the OpenADR server did not start")
        self.base = f"http://127.0.0.1:{self.http.server_port}{BASE_PATH}"

    def close(self) -> None:
        """Stop serving and close the in-process VTN."""
        self.http.shutdown()
        self.thread.join(5)
        self.web.close()
