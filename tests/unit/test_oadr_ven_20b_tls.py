"""The OpenADR 2.0b link over TLS with a client certificate and signed messages, against openleadr's
`OpenADRServer` requiring the client certificate (CERT_REQUIRED) and checking that the fingerprint of the TLS
certificate and of the XML signature are the VEN's. The VEN checks the VTN's server certificate against the CA
and the VTN's signatures against its fingerprint. A certificate authority, the VTN's and the VEN's certificates
are made here (EC P-256)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from openleadr import OpenADRServer, utils
from openleadr.service.vtn_service import VTNService

from dr_oadr_ven.oadr20b import Oadr20bLink, Oadr20bSettings
from tests.unit.test_oadr_ven_20b import WAIT_S, AgentSide, OpenleadrVtn, get, make_event, signal

pytestmark = pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")

VEN_ID = "ven-20b-tls"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path) -> dict[str, str]:
    """A CA, a VTN certificate for 127.0.0.1 and a VEN client certificate, as PEM files in `folder`."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test-ca")).issuer_name(_name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, san in (("vtn", x509.IPAddress(IPv4Address("127.0.0.1"))), ("ven", x509.DNSName("ven.test"))):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(f"{who}.test")).issuer_name(_name("test-ca"))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        files[f"{who}_cert"] = folder / f"{who}.pem"
        files[f"{who}_key"] = folder / f"{who}.key"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return {k: str(v) for k, v in files.items()}


class TlsVtn(OpenleadrVtn):
    """openleadr's VTN on HTTPS requiring the VEN's certificate, signing its messages, looking up the VEN's
    fingerprint (`ven_lookup`)."""

    def __init__(self, pki: dict[str, str]) -> None:
        super().__init__(ven_id=VEN_ID)
        self.pki = pki
        self.url = self.url.replace("http://", "https://")
        self.ven_fingerprint = utils.certificate_fingerprint(Path(pki["ven_cert"]).read_text())
        self.vtn_fingerprint = utils.certificate_fingerprint(Path(pki["vtn_cert"]).read_text())

    def _server(self) -> OpenADRServer:
        return OpenADRServer(vtn_id="TEST_VTN", http_port=self.port, http_host="127.0.0.1",
                             requested_poll_freq=timedelta(seconds=self._poll_s), show_fingerprint=False,
                             cert=self.pki["vtn_cert"], key=self.pki["vtn_key"], http_cert=self.pki["vtn_cert"],
                             http_key=self.pki["vtn_key"], http_ca_file=self.pki["ca"], ven_lookup=self._lookup)

    def _lookup(self, ven_id: str) -> dict[str, str]:
        if ven_id != VEN_ID:
            return {}
        return {"ven_id": VEN_ID, "ven_name": "building-tls", "fingerprint": self.ven_fingerprint,
                "registration_id": "reg-building-tls"}


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


@pytest.fixture
def tls_vtn(pki):
    try:
        with TlsVtn(pki) as server:
            yield server
    finally:
        for attribute in ("ven_lookup", "fingerprint_lookup"):   # openleadr keeps them on the class
            if attribute in VTNService.__dict__:
                delattr(VTNService, attribute)


def test_tls_client_certificate_signed_messages_event_and_reports(tls_vtn, pki):
    agent = AgentSide()
    settings = Oadr20bSettings(ven_name="building-tls", vtn_url=tls_vtn.url, cert=pki["ven_cert"],
                               key=pki["ven_key"], ca_file=pki["ca"], vtn_fingerprint=tls_vtn.vtn_fingerprint)
    link = Oadr20bLink(settings, agent.on_event, agent.decide, lambda: agent.telemetry)
    link.start(agent.inbox.put)
    try:
        assert link.wait_registered(WAIT_S), link.status()
        assert get(tls_vtn.registrations, "registration over TLS") == "building-tls"
        r_id, _, value = get(tls_vtn.reports, "a signed TELEMETRY_USAGE report")
        assert (r_id, value) in {("power", 12.5), ("baseline", 15.0)}
        start = datetime.now(timezone.utc) + timedelta(seconds=60)
        tls_vtn.add_event(make_event("ev-tls", [signal("LOAD_DISPATCH", "delta", start, [-1.5])], start=start,
                                     ven_id=VEN_ID))
        assert get(agent.events, "the event over TLS").intervals[0].value == -1.5
        assert get(tls_vtn.opts, "the signed opt-in") == ("ev-tls", "optIn")
    finally:
        assert link.stop(10)
        agent.stop()


def test_a_vtn_whose_signature_does_not_match_the_fingerprint_is_not_registered(tls_vtn, pki):
    agent = AgentSide()
    settings = Oadr20bSettings(ven_name="building-tls", vtn_url=tls_vtn.url, cert=pki["ven_cert"],
                               key=pki["ven_key"], ca_file=pki["ca"], vtn_fingerprint="00:11:22:33:44:55:66:77:88:99",
                               retry_initial_s=0.5, retry_max_s=0.5)
    link = Oadr20bLink(settings, agent.on_event, agent.decide, lambda: agent.telemetry)
    link.start(agent.inbox.put)
    try:
        assert not link.wait_registered(3.0)
        status = link.status()
        assert status["counts"]["registrationAttempts"] >= 2 and not status["up"] and status["venId"] is None
    finally:
        assert link.stop(10)
        agent.stop()
