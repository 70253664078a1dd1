"""HTTP for feeds: every connection checked against internal addresses, one deadline for a
whole download.

httpx follows the redirects, but every connection it opens (for the feed's url and for each
redirect) goes through `_Guard`, an httpcore network backend. It resolves the host once
(`resolve`), refuses the connection if any of its addresses is internal, and connects to an
address it has just checked (`connect`): checking in the connection itself, rather than checking
each URL before handing it to httpx, is what keeps a name from resolving to a public address for
the check and an internal one for the connection (DNS rebinding), and it covers every hop
whoever follows the redirects. TLS still verifies the certificate against the host name (httpcore
passes it as the server name). The same guard caps each connect, read and write at the time
left before the download's deadline, so `timeout:` bounds the whole download, however slowly a
server drips its answer; httpx's own timeouts apply per read.

httpx (0.28) has no option to give its transport a network backend, hence `_Transport`: what
httpx.HTTPTransport does, over an httpcore pool that has one. Proxies from the environment are
not used: a proxy would resolve and connect where no check can reach. Name resolution itself is
bounded by the system resolver's own timeouts, not by the deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx


class AddressRefused(Exception):
    """A connection would go to an internal address; `url` is the request's, once known."""

    def __init__(self, reason: str, *, url: str | None = None) -> None:
        super().__init__(reason)
        self.url = url


_SYSTEM = httpcore.SyncBackend()


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, each once, in the system resolver's order (an IP address
    resolves to itself). Tests replace this to give names addresses without DNS."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def connect(address: str, port: int, timeout: float | None) -> httpcore.NetworkStream:
    """A TCP connection to `address`, an IP address `check_address` accepted. Tests replace this
    to route a public-looking address to a local server."""
    return _SYSTEM.connect_tcp(address, port, timeout=timeout)


def internal_kind(address: str) -> str | None:
    """What kind of internal address `address` is ("loopback", "private", "link-local", ...), or
    None for a public one. An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is judged as the IPv4
    address it carries, which is where a connection to it goes."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    kinds = (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
             ("link-local", ip.is_link_local), ("multicast", ip.is_multicast), ("private", ip.is_private),
             ("reserved", ip.is_reserved),
             ("non-public", not ip.is_global))     # shared (100.64/10), and ranges added later
    return next((kind for kind, hit in kinds if hit), None)


def check_address(host: str, addresses: Sequence[str], *, allow_internal: bool) -> None:
    """Raise AddressRefused if any of `addresses` (what `host` resolves to) is internal, unless
    `allow_internal`. One internal address is enough: which one a connection uses is not ours to
    choose."""
    if allow_internal:
        return
    for address in addresses:
        kind = internal_kind(address)
        if kind is not None:
            article = "an" if kind[0] in "aeiou" else "a"
            literal = _is_ip(host) and ipaddress.ip_address(host) == ipaddress.ip_address(address)
            raise AddressRefused(f"{address} is {article} {kind} address" if literal
                                 else f"{host} is {address}, {article} {kind} address")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _on_internal_address(url: str) -> bool:
    """Whether the feed's own url is on an internal address: then the operator chose it, and its
    redirects may go to internal addresses too."""
    parsed = httpx.URL(url)
    try:
        addresses = resolve(parsed.raw_host.decode("ascii"), parsed.port or (443 if parsed.scheme == "https"
                                                                             else 80))
        return any(internal_kind(a) is not None for a in addresses)
    except (OSError, UnicodeError, ValueError):    # not resolvable now: the connection will say so
        return False


def _left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """The time an operation may take: `timeout`, capped at what is left before `deadline`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the feed's timeout has passed")
    return left if timeout is None else min(timeout, left)


class _Guard(httpcore.NetworkBackend):
    """The connections of one download: each checked (see above), each bounded by the deadline."""

    def __init__(self, *, deadline: float, allow_internal: bool) -> None:
        self.deadline = deadline
        self.allow_internal = allow_internal

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host} ({getattr(exc, 'strerror', None) or exc})"
                                        ) from None
        check_address(host, addresses, allow_internal=self.allow_internal)
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                stream = connect(address, port, _left(self.deadline, timeout, httpcore.ConnectTimeout))
            except httpcore.ConnectError as exc:       # the next address may answer
                failure = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("feeds are fetched over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the download's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname,
                                     _left(self._deadline, timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


_HTTPCORE_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                    httpcore.ProxyError, httpcore.UnsupportedProtocol)


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """httpcore's errors as the httpx errors of the same name, as httpx's own transport raises them."""
    try:
        yield
    except _HTTPCORE_ERRORS as exc:
        kind = getattr(httpx, type(exc).__name__, httpx.TransportError)
        raise kind(str(exc), request=request) from exc


class _Transport(httpx.BaseTransport):
    """httpx.HTTPTransport's work over an httpcore pool whose connections go through `guard`."""

    def __init__(self, guard: _Guard) -> None:
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=guard)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        try:
            with _as_httpx_errors(request):
                response = self._pool.handle_request(core)
        except AddressRefused as exc:
            raise AddressRefused(str(exc), url=str(request.url)) from None
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Body(response, request), extensions=response.extensions)

    def close(self) -> None:
        self._pool.close()


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors(self._request):
            yield from self._response.iter_stream()

    def close(self) -> None:
        self._response.close()


def guarded_client(url: str, *, deadline: float, headers: Mapping[str, str], timeout: float,
                   max_redirects: int) -> httpx.Client:
    """An httpx client for one download of `url`: redirects followed, each connection checked
    (internal addresses refused unless `url` itself is on one) and ended by `deadline`."""
    guard = _Guard(deadline=deadline, allow_internal=_on_internal_address(url))
    return httpx.Client(transport=_Transport(guard), headers=dict(headers), timeout=timeout,
                        follow_redirects=True, max_redirects=max_redirects)
