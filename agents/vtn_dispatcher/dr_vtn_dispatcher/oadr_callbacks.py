"""Which OpenADR 3 callback URLs dr.vtn may call, and the HTTP connections it calls them on.

`CallbackPolicy` (from `openadr3.callbackPolicy` in dr.vtn's config) decides twice:
  - `check_url(url)` when a subscription is created or updated: the scheme is allowed, the URL has a host, and a
    host given as an IP address (or `localhost`) is one that may be called;
  - `resolve(host, port)` when a webhook is sent: the name is resolved and every address it resolves to must be
    one that may be called; the connection is then made to the checked address (a name cannot resolve to a
    public address for the check and to a private one for the call).
An address may be called when it is public (and `allowPublic`), or inside `allowedNetworks`, or its host is in
`allowedHosts`. Never, whatever is allowed: link-local addresses (169.254.0.0/16 with the clouds' metadata
service, fe80::/10), the unspecified, multicast and reserved addresses, and the VTN's own HTTP port
(`vtnHttpPort`) on a loopback address or an address of this machine.

`PooledPoster` POSTs over persistent connections, one pool per sending thread (a gevent socket must stay in
the thread that made it), at most `max_hosts` hosts per thread (the least recently used is closed). Redirects
are not followed. A connection that the other side closed while idle is retried once on a fresh one.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dr_vtn_dispatcher.errors import invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NEVER = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
         ipaddress.ip_network("fd00:ec2::254/128"))          # link-local and the clouds' metadata addresses
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_RESPONSE_BYTES = 65_536


class CallbackRefused(Exception):
    """A callback URL or address the policy refuses; the message says why (never the bearer token)."""


def _address(text: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _legacy_ipv4(host: str) -> Address | None:
    """The address of a host written in the forms inet_aton reads besides dotted quads (`2130706433`,
    `0x7f.1`, `127.1`), which resolvers turn into addresses without asking DNS."""
    if not host or any(c not in "0123456789abcdefx." for c in host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


_OWN: list[Any] = [0.0, frozenset()]     # when read (monotonic), this machine's addresses


def _own_addresses(max_age_s: float = 60.0) -> frozenset[Address]:
    """This machine's addresses (its interfaces' and its host name's), read again after `max_age_s`."""
    if time.monotonic() - _OWN[0] < max_age_s:
        return _OWN[1]
    texts: list[str] = []
    try:
        import psutil   # volttron-core's dependency: every interface's addresses
        texts += [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family in (socket.AF_INET, socket.AF_INET6)]
    except (ImportError, OSError):
        pass
    try:
        texts += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    found = {ip for ip in (_address(t) for t in texts) if ip is not None}
    _OWN[0], _OWN[1] = time.monotonic(), frozenset(found)
    return _OWN[1]


@dataclass(frozen=True)
class CallbackPolicy:
    """The callback URL rules (see the module docstring)."""

    schemes: frozenset[str] = frozenset(DEFAULT_PORTS)
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()
    allow_public: bool = True
    vtn_http_port: int | None = 8080
    own_addresses: Callable[[], frozenset[Address]] = field(default=_own_addresses, compare=False, repr=False)
    getaddrinfo: Callable[..., Any] = field(default=socket.getaddrinfo, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: Any) -> CallbackPolicy:
        """From dr.vtn's `openadr3.callbackPolicy` model (`schemes`, `allowedHosts`, `allowedNetworks`,
        `allowPublic`, `vtnHttpPort`); an IP address among the hosts counts as a one-address network."""
        hosts = {h.lower().rstrip(".") for h in config.allowed_hosts}
        networks = [ipaddress.ip_network(n, strict=False) for n in config.allowed_networks]
        networks += [ipaddress.ip_network(h) for h in hosts if _address(h) is not None]
        return cls(frozenset(s.lower() for s in config.schemes), frozenset(h for h in hosts if _address(h) is None),
                   tuple(networks), bool(config.allow_public), config.vtn_http_port)

    def split(self, url: str) -> tuple[str, str, int]:
        """(scheme, host, port) of an allowed-scheme URL with a host; CallbackRefused otherwise."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise CallbackRefused(f"not a usable URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise CallbackRefused(f"scheme {scheme or '(none)'!r} is not allowed (allowed: "
                                  f"{', '.join(sorted(self.schemes))})")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise CallbackRefused("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused("credentials in the URL are not allowed (use bearerToken)")
        return scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme, 80)

    def check_url(self, url: str) -> None:
        """The check at subscription time (no name resolution): CallbackRefused when the URL cannot be called."""
        _scheme, host, port = self.split(url)
        ip = _address(host) or _legacy_ipv4(host)
        if ip is not None:
            self.check_address(host, ip, port)
        elif host == "localhost" or host.endswith(".localhost"):
            self.check_address(host, ipaddress.ip_address("127.0.0.1"), port)
        elif not self.allow_public and host not in self.allowed_hosts:
            raise CallbackRefused(f"host {host!r} is not among the allowed hosts")

    def check_address(self, host: str, ip: Address, port: int) -> None:
        """CallbackRefused when `ip` (what `host` resolved to) may not be called on `port`."""
        if any(ip in net for net in NEVER if net.version == ip.version):
            raise CallbackRefused(f"{ip} is a link-local or metadata address")
        if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
            raise CallbackRefused(f"{ip} is not a unicast address")
        if self.vtn_http_port is not None and port == self.vtn_http_port and \
                (ip.is_loopback or ip in self.own_addresses()):
            raise CallbackRefused(f"port {port} of this machine is the VTN's own HTTP port")
        allowed = host in self.allowed_hosts or any(ip in n for n in self.allowed_networks if n.version == ip.version)
        if allowed:
            return
        if not ip.is_global:
            raise CallbackRefused(f"{ip} is a loopback or private address not in allowedHosts/allowedNetworks")
        if not self.allow_public:
            raise CallbackRefused(f"{host} ({ip}) is not among the allowed hosts or networks")

    def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses `host` resolves to, every one checked; CallbackRefused when any is refused (OSError when
        the name does not resolve)."""
        ip = _address(host)
        if ip is not None:
            found: Iterable[Address] = [ip]
        else:
            infos = self.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found = list(dict.fromkeys(a for a in (_address(str(i[4][0])) for i in infos) if a is not None))
        addresses = list(found)
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        for address in addresses:
            self.check_address(host, address, port)
        return addresses


_DEFAULT_POLICY = CallbackPolicy()


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection to an address the policy checked (the Host header keeps the URL's name)."""

    def __init__(self, host: str, port: int, address: Address, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.checked_by: CallbackPolicy | None = None

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.address), self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedTlsConnection(_PinnedConnection):
    """HTTPS to a checked address; the certificate is verified against the URL's host name."""

    def __init__(self, host: str, port: int, address: Address, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, address, timeout)
        self.context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


class PooledPoster:
    """`post(url, body, token, timeout) -> HTTP status` over persistent connections per thread and host,
    every new connection made to an address `policy()` accepts (CallbackRefused otherwise; OSError on network
    failures, like the plain poster)."""

    def __init__(self, policy: Callable[[], CallbackPolicy | None], max_hosts: int = 64,
                 tls: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.max_hosts = max_hosts
        self.tls = tls or ssl.create_default_context()
        self._local = threading.local()

    def _pool(self) -> OrderedDict[tuple[str, str, int], _PinnedConnection]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = OrderedDict()
        return pool

    def _connect(self, policy: CallbackPolicy, scheme: str, host: str, port: int,
                 timeout: float) -> _PinnedConnection:
        address = policy.resolve(host, port)[0]
        conn = _PinnedTlsConnection(host, port, address, timeout, self.tls) if scheme == "https" else \
            _PinnedConnection(host, port, address, timeout)
        conn.checked_by = policy
        return conn

    def __call__(self, url: str, body: bytes, token: str | None, timeout: float) -> int:
        policy = self.policy() or _DEFAULT_POLICY
        scheme, host, port = policy.split(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        pool = self._pool()
        key = (scheme, host, port)
        conn = pool.pop(key, None)
        if conn is not None and conn.checked_by is not policy:     # the policy changed since it was checked
            conn.close()
            conn = None
        reused = conn is not None
        if conn is None:
            conn = self._connect(policy, scheme, host, port, timeout)
        while True:
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                response.read(MAX_RESPONSE_BYTES)
                status = int(response.status)
                if response.will_close or not response.isclosed():
                    conn.close()
                else:
                    self._keep(pool, key, conn)
                return status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused:
                    raise
                reused = False            # the server closed it while idle: once more on a fresh connection
                conn = self._connect(policy, scheme, host, port, timeout)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if isinstance(exc, OSError):
                    raise
                raise OSError(f"bad HTTP answer: {type(exc).__name__}") from None

    def _keep(self, pool: OrderedDict[tuple[str, str, int], _PinnedConnection], key: tuple[str, str, int],
              conn: _PinnedConnection) -> None:
        pool[key] = conn
        while len(pool) > self.max_hosts:
            _key, old = pool.popitem(last=False)
            old.close()

    def close(self) -> None:
        """Close this thread's connections."""
        pool = self._pool()
        while pool:
            _key, conn = pool.popitem()
            conn.close()


def check_subscription_callbacks(policy: CallbackPolicy, body: Any) -> None:
    """A subscription's callback URLs must pass the callback policy (400 naming the URL's field)."""
    operations = body.get("objectOperations") if isinstance(body, dict) else None
    for index, op in enumerate(operations if isinstance(operations, list) else []):
        url = op.get("callbackUrl") if isinstance(op, dict) else None
        if isinstance(url, str):
            try:
                policy.check_url(url)
            except CallbackRefused as exc:
                raise invalid(f"objectOperations[{index}].callbackUrl", str(exc)) from None
