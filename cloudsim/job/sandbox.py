"""The job's network, as on the cloud: timeout, firewall, and a separate network.

Installed once per worker, before its first job (``install``), with a small
reset before each job (``before``) and a report after it (``after``):

- ``network-timeout``: the default socket timeout of a job is the
  ``network_timeout`` setting (30 s, PiCloud's value); a job may set it back to
  ``None``. It is set again before every job, so each job starts with the
  cloud's default even in a reused interpreter. The client's own default is
  never changed (this runs only in worker interpreters).
- ``no-listen``: ``socket.socket.listen`` on an internet socket (IPv4/IPv6)
  raises ``PermissionError`` naming the firewall. Unix-domain sockets (local
  IPC inside the job's machine, e.g. ``multiprocessing`` managers) still work.
- ``separate-network``: an audit hook (``sys.addaudithook``) on the
  ``socket.connect``, ``socket.sendto`` and ``socket.sendmsg`` events refuses,
  with ``ConnectionRefusedError`` (``socket.socket.connect_ex`` returns
  ``ECONNREFUSED`` instead, as it would), to reach the client's machine or its
  private network: loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12,
  192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), "this host"
  (0.0.0.0/8, ::) and the addresses of this machine's own interfaces; unless
  the address, its name, or address:port is listed in ``allow_hosts``.
  Connections to other addresses are untouched. DNS (port 53) is let through:
  the cloud has a resolver of its own.

What is covered: every TCP ``connect`` and every UDP
``connect``/``sendto``/``sendmsg`` made through Python's ``socket`` module in
the job's interpreter, whoever calls it (``urllib``, ``http.client``,
``asyncio``, ``requests``, database drivers written in Python). What is not:
connections made by C libraries with their own sockets (e.g. ``libpq``),
programs the job runs as subprocesses (``curl localhost``), and Unix-domain
sockets. The worker's own channel to the client is a socket pair that was
connected before the job (no ``connect`` event), so it is never affected.

A refusal that the job swallowed (a library that caught the error and went
on) is reported after the job as a pitfall, so it is not silently lost; when
the job fails with the error, the error text is the explanation.

This module is imported by the worker; it imports only the standard library
and :mod:`cloudsim.pitfalls`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple, Union

from cloudsim import pitfalls as _pitfalls
from cloudsim.job import scope as _scope

__all__ = [
    "install",
    "before",
    "after",
    "classify_address",
    "parse_allow_hosts",
    "AllowList",
    "listen_refusal",
    "connect_refusal",
]

_IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# (network, what it is to the user), checked in order; e.g. 127.0.0.1 -> "loopback"
_LOCAL_NETWORKS: Tuple[Tuple[Any, str], ...] = tuple(
    (ipaddress.ip_network(net), kind)
    for net, kind in (
        ("127.0.0.0/8", "loopback"),
        ("::1/128", "loopback"),
        ("0.0.0.0/8", "this-host"),  # 0.0.0.0 reaches the local machine on Linux
        ("::/128", "this-host"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("fc00::/7", "private"),
        ("169.254.0.0/16", "link-local"),
        ("fe80::/10", "link-local"),
        ("255.255.255.255/32", "private"),  # limited broadcast: the local network
    )
)

_KIND_TEXT = {
    "loopback": "the loopback interface of your machine",
    "this-host": "your own machine",
    "private": "your private network",
    "link-local": "your local network segment",
    "interface": "an address of your own machine",
}

_DNS_PORT = 53
_WATCHED = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})

# Installed state (per worker). _SETTINGS_TIMEOUT: the job's default socket timeout.
_SETTINGS_TIMEOUT: Optional[float] = None
_ALLOW: Optional["AllowList"] = None
_INSTALLED = False
# Refusals during the current job, for the pitfall when the job swallowed them,
# e.g. [("separate-network", "127.0.0.1:5432", "loopback")]
_REFUSED: List[Tuple[str, str, str]] = []
_REFUSED_MAX = 100  # a job retrying in a loop must not grow it without end
# address tuple -> refusal message or None, for repeated sendto/connect to the same place
_VERDICTS: Dict[Any, Optional[Tuple[str, str]]] = {}
_VERDICTS_MAX = 256
_OWN_ADDRESSES: Optional[FrozenSet[_IPAddress]] = None


# ----------------------------------------------------------------- addresses
def _ip(text: Any) -> Optional[_IPAddress]:
    """The IP address of a literal (``'10.0.0.1'``, ``'fe80::1%eth0'``), or None for a name."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str):
        return None
    text = text.strip("[]")
    if "%" in text:  # IPv6 scope id
        text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _own_addresses() -> FrozenSet[_IPAddress]:
    """The addresses of this machine's interfaces (computed once, on first need)."""
    global _OWN_ADDRESSES
    if _OWN_ADDRESSES is None:
        found: Set[_IPAddress] = set()
        try:
            import psutil

            for addrs in psutil.net_if_addrs().values():
                for addr in addrs:
                    if addr.family in (socket.AF_INET, socket.AF_INET6):
                        ip = _ip(addr.address)
                        if ip is not None:
                            found.add(ip)
        except Exception:  # psutil missing or no permission: the fixed networks still apply
            pass
        _OWN_ADDRESSES = frozenset(found)
    return _OWN_ADDRESSES


def classify_address(address: Union[str, _IPAddress], own: Optional[Iterable[Any]] = None) -> Optional[str]:
    """Say whether an IP address belongs to the client's machine or network.

    Args:
        address: an IP address (``'192.168.1.5'``, ``'::1'``, ``'::ffff:127.0.0.1'``).
        own: the machine's own interface addresses (default: found with psutil).

    Returns:
        ``'loopback'``, ``'this-host'``, ``'private'``, ``'link-local'`` or
        ``'interface'`` (one of the machine's own addresses) when a job on
        the cloud could not reach it; ``None`` for any other address (and
        for a string that is not an IP address).
    """
    ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else _ip(address)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network, kind in _LOCAL_NETWORKS:
        if ip.version == network.version and ip in network:
            return kind
    own_set = _own_addresses() if own is None else {a if not isinstance(a, str) else _ip(a) for a in own}
    if ip in own_set:
        return "interface"
    return None


# --------------------------------------------------------------- allow_hosts
def parse_allow_hosts(entries: Iterable[str]) -> List[Tuple[str, Optional[int]]]:
    """Split ``allow_hosts`` entries into (host, port or None).

    Accepts the forms the setting is normalized to: ``"host"``,
    ``"host:port"``, ``"::1"`` and ``"[::1]:port"``; host names are lower-cased.
    """
    out: List[Tuple[str, Optional[int]]] = []
    for entry in entries:
        text = str(entry).strip()
        if not text:
            continue
        if text.startswith("["):
            end = text.find("]")
            host, rest = text[1:end], text[end + 1 :]
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text) if port_text.isdigit() else None
        else:  # a name, an IPv4 address, or a bare IPv6 address
            host, port = text, None
        out.append((host.lower(), port))
    return out


class AllowList:
    """The ``allow_hosts`` setting, ready for matching connections.

    Entries given as addresses match at once; entries given as names match
    a connection made to that name, and (once resolved, on the first refusal
    candidate) every address the name resolves to.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = parse_allow_hosts(entries)
        # (address, port or None) pairs of literal entries, e.g. {(IPv4Address('127.0.0.1'), 8080)}
        self._by_ip: Set[Tuple[_IPAddress, Optional[int]]] = set()
        # (name, port or None), e.g. {("localhost", 5432)}
        self._by_name: Set[Tuple[str, Optional[int]]] = set()
        for host, port in self.entries:
            ip = _ip(host)
            if ip is not None:
                self._by_ip.add((ip, port))
            else:
                self._by_name.add((host, port))
        self._resolved = not self._by_name

    def _resolve_names(self) -> None:
        """Add the addresses of named entries (lazily: a name lookup may be slow)."""
        self._resolved = True
        for name, port in self._by_name:
            try:
                infos = socket.getaddrinfo(name, None)
            except (OSError, UnicodeError):
                continue
            for info in infos:
                ip = _ip(info[4][0])
                if ip is not None:
                    self._by_ip.add((ip, port))

    def allows(self, ip: Optional[_IPAddress], port: Optional[int], name: Optional[str] = None) -> bool:
        """True when a connection to ``ip``/``port`` (made to ``name``, if by name) is opened up."""
        if not self.entries:
            return False
        if name is not None:
            lowered = name.lower()
            if (lowered, None) in self._by_name or (lowered, port) in self._by_name:
                return True
        if ip is None:
            return False
        if not self._resolved:
            self._resolve_names()
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any((c, None) in self._by_ip or (c, port) in self._by_ip for c in candidates)


# ---------------------------------------------------------------- messages
def _where(ip_text: str, port: Optional[int]) -> str:
    if port is None:
        return ip_text
    return f"[{ip_text}]:{port}" if ":" in ip_text else f"{ip_text}:{port}"


def connect_refusal(target: str, kind: str, ip_text: str, port: Optional[int]) -> str:
    """The text of the ``ConnectionRefusedError`` for a connection to the client's network."""
    entry = _where(ip_text, port)
    return (
        f"Connection to {target} refused by cloudsim: {ip_text} is {_KIND_TEXT.get(kind, 'your network')}, "
        "and the cloud is on another network than your machine, so a job cannot reach it "
        "(pitfall: separate-network).\n"
        "Fix: the service must allow external access (listen on a public address, with access controls) "
        "and the job must use that address; in the simulator, open the service to jobs with the "
        f"allow_hosts setting, e.g. cloud.start_simulator(allow_hosts=[{entry!r}]).\n"
        f"See: {_pitfalls.CATALOGUE['separate-network'].anchor}"
    )


def listen_refusal(where: str) -> str:
    """The text of the ``PermissionError`` for ``listen()`` in a job."""
    return (
        f"listen() on {where} refused by cloudsim: the cloud's firewall blocks incoming connections, "
        "so a job cannot listen for connections (pitfall: no-listen).\n"
        "Fix: make outgoing connections only (they work): have the job connect to a service that "
        "allows external access, or exchange data through cloud.files or the job's arguments and result.\n"
        f"See: {_pitfalls.CATALOGUE['no-listen'].anchor}"
    )


# ------------------------------------------------------------------- checks
def _split(address: Any) -> Tuple[Any, Optional[int]]:
    if isinstance(address, tuple) and len(address) >= 2:
        port = address[1] if isinstance(address[1], int) else None
        return address[0], port
    return None, None


def _verdict(family: int, address: Any) -> Optional[Tuple[str, str]]:
    """(message, kind) when a connection to ``address`` must be refused, else None."""
    host, port = _split(address)
    if host is None or port == _DNS_PORT:
        return None
    ip = _ip(host)
    name = None
    if ip is None:
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if host in ("", "<any>"):
            ip = ipaddress.ip_address("0.0.0.0" if family == socket.AF_INET else "::")
        elif host == "<broadcast>":
            ip = ipaddress.ip_address("255.255.255.255")
        else:  # a name: the socket module already resolved it the same way to connect
            name = host
            try:
                infos = socket.getaddrinfo(host, port, family)
            except (OSError, UnicodeError):
                return None  # the connect itself reports the lookup failure
            if not infos:
                return None
            ip = _ip(infos[0][4][0])
            if ip is None:
                return None
    kind = classify_address(ip)
    if kind is None:
        return None
    assert _ALLOW is not None
    if _ALLOW.allows(ip, port, name):
        return None
    ip_text = str(ip)
    target = _where(name, port) if name is not None else _where(ip_text, port)
    if name is not None:
        target += f" ({ip_text})"
    return connect_refusal(target, kind, ip_text, port), kind


def _refusal(sock: Any, address: Any) -> Optional[Tuple[str, str]]:
    """(message, kind) when ``sock`` may not reach ``address`` (noted for the report), else None."""
    if address is None:
        return None
    try:
        family = sock.family
    except Exception:
        return None
    if family != socket.AF_INET and family != socket.AF_INET6:
        return None
    try:
        key: Any = (family, address)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _VERDICTS:
        verdict = _VERDICTS[key]
    else:
        verdict = _verdict(family, address)
        if key is not None:
            if len(_VERDICTS) >= _VERDICTS_MAX:
                _VERDICTS.clear()
            _VERDICTS[key] = verdict
    if verdict is not None and len(_REFUSED) < _REFUSED_MAX:
        host, port = _split(address)
        _REFUSED.append(("separate-network", _where(str(host), port), verdict[1]))
    return verdict


def _audit(event: str, args: tuple) -> None:
    """The audit hook: refuse connections to the client's network (kept tiny: it sees every event)."""
    if event not in _WATCHED or not _scope.applies():
        return
    verdict = _refusal(args[0], args[1])
    if verdict is not None:
        raise ConnectionRefusedError(errno.ECONNREFUSED, verdict[0])


_ORIGINAL_CONNECT_EX = socket.socket.connect_ex


def _connect_ex(self: socket.socket, address: Any) -> int:
    """``connect_ex`` reports a refusal as its error code, as a refused connection would."""
    if _scope.applies() and _refusal(self, address) is not None:
        return errno.ECONNREFUSED
    return _ORIGINAL_CONNECT_EX(self, address)


def _where_bound(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
        return _where(str(host), port)
    except Exception:
        return "a socket"


_ORIGINAL_LISTEN = socket.socket.listen


def _listen(self: socket.socket, *args: Any) -> None:
    """``socket.socket.listen`` in a job: the cloud's firewall refuses internet sockets."""
    if self.family in (socket.AF_INET, socket.AF_INET6) and _scope.applies():
        where = _where_bound(self)
        if len(_REFUSED) < _REFUSED_MAX:
            _REFUSED.append(("no-listen", where, "listen"))
        raise PermissionError(errno.EACCES, listen_refusal(where))
    return _ORIGINAL_LISTEN(self, *args)


# -------------------------------------------------------------------- hooks
def install(settings: dict) -> None:
    """Set up the job's network (once per worker): timeout, firewall, separate network."""
    global _SETTINGS_TIMEOUT, _ALLOW, _INSTALLED
    _SETTINGS_TIMEOUT = settings.get("network_timeout")
    socket.setdefaulttimeout(_SETTINGS_TIMEOUT)
    _ALLOW = AllowList(settings.get("allow_hosts") or ())
    if _INSTALLED:  # audit hooks cannot be removed: never add a second one
        return
    _INSTALLED = True
    socket.socket.listen = _listen  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    sys.addaudithook(_audit)


def before(job: Any) -> None:
    """Each job starts with the cloud's default socket timeout, whatever the last job set."""
    socket.setdefaulttimeout(_SETTINGS_TIMEOUT)


def after(job: Any) -> None:
    """Report refusals a job swallowed (a job that failed with one already shows its text)."""
    if not _REFUSED:
        return
    refused = list(dict.fromkeys(_REFUSED))
    _REFUSED.clear()
    if not job.ok:
        return
    for quirk, where, kind in refused[:5]:
        if quirk == "no-listen":
            job.pitfalls.append(_pitfalls.record(
                "no-listen",
                f"Job {job.jid} ({job.func_name}) tried to listen on {where}; cloudsim refused it with "
                "PermissionError, and the job caught the error and returned normally, so the refusal may "
                "have gone unnoticed.",
                "the cloud's firewall blocks incoming connections, so a job cannot listen on a socket.",
                "make outgoing connections only, or exchange data through cloud.files or the job's result.",
                address=where,
            ))
        else:
            job.pitfalls.append(_pitfalls.record(
                "separate-network",
                f"Job {job.jid} ({job.func_name}) tried to reach {where} ({_KIND_TEXT.get(kind, kind)}); "
                "cloudsim refused the connection (ConnectionRefusedError, or ECONNREFUSED from connect_ex), "
                "and the job went on and returned normally, so the refusal may have gone unnoticed.",
                "the cloud is on another network than your machine, so services on your loopback or "
                "private network cannot be reached from a job.",
                "the service must allow external access; in the simulator, list it in the allow_hosts setting.",
                address=where,
                network=kind,
            ))
