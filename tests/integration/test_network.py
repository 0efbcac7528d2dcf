"""The job's network: default timeout, no listening, and the client's network out of reach.

These are the ``network-timeout``, ``no-listen`` and ``separate-network``
entries of ``QUIRKS.md`` (``cloudsim/job/sandbox.py``). The address rules are
unit-tested in this process (there is no outside network to connect to
here); everything else uses real sockets: servers in this process (the
client) on 127.0.0.1, which jobs try to reach, refused unless the service is
listed in ``allow_hosts``, in which case a byte really goes through.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import warnings
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from cloudsim.job import sandbox

WAIT = 60.0  # seconds; only a hang reaches it


# ------------------------------------------------------------------ jobs


def default_timeouts() -> Tuple[int, Optional[float], Optional[float]]:
    with socket.socket() as s:
        return os.getpid(), socket.getdefaulttimeout(), s.gettimeout()


def clear_default_timeout() -> Tuple[int, Optional[float]]:
    socket.setdefaulttimeout(None)
    with socket.socket() as s:
        return os.getpid(), s.gettimeout()


def listen_tcp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        return s.getsockname()[1]


def create_server_tcp() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def swallow_listen() -> str:
    try:
        listen_tcp()
        return "listening"
    except PermissionError:
        return "no server"


def listen_unix(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        s.listen(1)
        return True


def exchange(host: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(payload)
        return s.recv(100)


def connect_by_name(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))


def connect_ex_code(host: str, port: int) -> int:
    with socket.socket() as s:
        s.settimeout(10)
        return s.connect_ex((host, port))


def send_udp(host: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"udp-from-job", (host, port))


def swallow_refusal(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            return "connected"
    except ConnectionRefusedError:
        return "gave up quietly"


def refused_then_use_the_cloud(port: int) -> Tuple[str, int]:
    """After a refusal the job still talks to the cloud through the worker's own channel."""
    import cloudsim

    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        outcome = "connected"
    except ConnectionRefusedError:
        outcome = "refused"
    return outcome, cloudsim.result(cloudsim.call(pow, 2, 5), timeout=60)


# ------------------------------------------------------------------ servers in the client


class EchoServer:
    """A TCP server on the client's loopback: answers each connection with b'ack:' + what it read."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)  # the accept loop looks at `stop` this often
        self.port = self.sock.getsockname()[1]
        self.received: List[bytes] = []
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="test-echo-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(30)
                try:
                    data = conn.recv(100)
                    self.received.append(data)
                    conn.sendall(b"ack:" + data)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def _result(cloud: Any, jid: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cloud.result(jid, timeout=WAIT)


def _failure(cloud: Any, jid: int) -> Any:
    with pytest.raises(cloud.CloudException) as info:
        _result(cloud, jid)
    return info.value


# ------------------------------------------------------------------ the address rules


@pytest.mark.parametrize(
    "address, kind",
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "this-host"),
        ("::", "this-host"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.20", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.10.1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("172.32.0.1", None),  # just outside 172.16/12
        ("192.169.0.1", None),
        ("11.0.0.1", None),
        ("2001:4860:4860::8888", None),
        ("example.com", None),  # a name is not an address
    ],
)
def test_classify_address(address: str, kind: Optional[str]) -> None:
    """Loopback, "this host", private and link-local addresses are the client's network; public ones are not."""
    assert sandbox.classify_address(address, own=[]) == kind


def test_classify_address_includes_the_machines_own_addresses() -> None:
    """An address of this machine's own interfaces counts as the client's machine, even a public one."""
    assert sandbox.classify_address("203.0.113.9", own=["203.0.113.9"]) == "interface"
    assert sandbox.classify_address("203.0.113.9", own=[]) is None
    assert sandbox.classify_address(ipaddress.ip_address("203.0.113.9"), own=[ipaddress.ip_address("203.0.113.9")]) == "interface"


def test_parse_allow_hosts_forms() -> None:
    """Every normalized form of the setting splits into (host, port or None)."""
    assert sandbox.parse_allow_hosts(["DB.local:5432", "10.0.0.5", "::1", "[::1]:8080", "127.0.0.1:80"]) == [
        ("db.local", 5432), ("10.0.0.5", None), ("::1", None), ("::1", 8080), ("127.0.0.1", 80),
    ]


def test_allow_list_matches_address_port_and_name() -> None:
    """An entry opens one port or, without a port, every port; names match by name and by resolved address."""
    allow = sandbox.AllowList(["127.0.0.1:8080", "10.0.0.5", "[::1]:9090", "localhost:5432"])
    ip = ipaddress.ip_address
    assert allow.allows(ip("127.0.0.1"), 8080)
    assert not allow.allows(ip("127.0.0.1"), 8081)
    assert allow.allows(ip("10.0.0.5"), 1) and allow.allows(ip("10.0.0.5"), 65535)
    assert allow.allows(ip("::1"), 9090) and not allow.allows(ip("::1"), 9091)
    assert allow.allows(ip("::ffff:127.0.0.1"), 8080)  # the IPv4-mapped form of an allowed address
    assert allow.allows(None, 5432, name="LOCALHOST")
    assert allow.allows(ip("127.0.0.1"), 5432)  # localhost resolves to it
    assert not allow.allows(ip("192.168.0.1"), 5432)
    assert not sandbox.AllowList([]).allows(ip("127.0.0.1"), 8080)


# ------------------------------------------------------------------ network-timeout


def test_default_timeout_is_30_seconds_in_jobs_only(cloud: Any) -> None:
    """A job's default socket timeout is 30 s (new sockets get it); the client's default is not changed."""
    client_before = socket.getdefaulttimeout()
    _pid, default, new_socket = _result(cloud, cloud.call(default_timeouts))
    assert (default, new_socket) == (30.0, 30.0)
    assert socket.getdefaulttimeout() == client_before


def test_job_can_clear_the_timeout_and_the_next_job_gets_the_setting_again(start: Callable) -> None:
    """``setdefaulttimeout(None)`` works in a job; the next job in the same interpreter starts with the setting."""
    cloud = start(max_concurrent_jobs=1, network_timeout=5)
    pid, cleared = _result(cloud, cloud.call(clear_default_timeout))
    assert cleared is None
    assert _result(cloud, cloud.call(default_timeouts)) == (pid, 5.0, 5.0)


def test_network_timeout_none_means_no_timeout(start: Callable) -> None:
    """``network_timeout=None`` gives jobs Python's own default: no timeout."""
    cloud = start(network_timeout=None)
    assert _result(cloud, cloud.call(default_timeouts))[1:] == (None, None)


# ------------------------------------------------------------------ no-listen


@pytest.mark.parametrize("job", [listen_tcp, create_server_tcp], ids=["listen", "create_server"])
def test_listen_is_refused_with_a_permission_error(cloud: Any, job: Callable) -> None:
    """Listening on an internet socket fails with PermissionError explaining the firewall."""
    error = _failure(cloud, cloud.call(job))
    assert error.exc_type == "PermissionError"
    text = str(error)
    assert "listen() on 127.0.0.1:" in text
    assert "the cloud's firewall blocks incoming connections" in text
    assert "(pitfall: no-listen)" in text


def test_unix_socket_may_listen(cloud: Any, tmp_path: Any) -> None:
    """A Unix-domain socket is local IPC inside the job's machine, not the firewall's business."""
    assert _result(cloud, cloud.call(listen_unix, str(tmp_path / "job.sock"))) is True


def test_refused_listen_that_the_job_swallowed_is_a_pitfall(cloud: Any) -> None:
    """A job that catches the PermissionError and returns still gets a ``no-listen`` pitfall."""
    jid = cloud.call(swallow_listen)
    assert _result(cloud, jid) == "no server"
    pits = [p for p in cloud.info(jid, ["pitfalls"])[jid]["pitfalls"] if p["id"] == "no-listen"]
    assert pits and "tried to listen on 127.0.0.1:" in pits[0]["message"], pits


# ------------------------------------------------------------------ separate-network


def test_connecting_to_the_clients_loopback_is_refused(cloud: Any, echo_server: EchoServer) -> None:
    """A job cannot reach a service on the client's loopback: ConnectionRefusedError saying what to do."""
    error = _failure(cloud, cloud.call(exchange, "127.0.0.1", echo_server.port, b"from-job"))
    assert error.exc_type == "ConnectionRefusedError"
    text = str(error)
    assert f"Connection to 127.0.0.1:{echo_server.port} refused" in text
    assert "the service must allow external access" in text
    assert f"allow_hosts=['127.0.0.1:{echo_server.port}']" in text
    assert "(pitfall: separate-network)" in text
    assert echo_server.connections == 0, "the job reached the client's loopback"


def test_connecting_by_name_to_localhost_is_refused(cloud: Any, echo_server: EchoServer) -> None:
    """``localhost`` is the client's machine too: refused by name (the message names it and its address)."""
    error = _failure(cloud, cloud.call(connect_by_name, "localhost", echo_server.port))
    assert error.exc_type == "ConnectionRefusedError"
    assert f"Connection to localhost:{echo_server.port} (127.0.0.1) refused" in str(error)
    error = _failure(cloud, cloud.call(exchange, "localhost", echo_server.port, b"by-name"))  # resolved first
    assert error.exc_type == "ConnectionRefusedError"
    assert echo_server.connections == 0


def test_connect_ex_returns_connection_refused(cloud: Any, echo_server: EchoServer) -> None:
    """``connect_ex`` returns ECONNREFUSED as its error code (it does not raise); the refusal is a pitfall."""
    jid = cloud.call(connect_ex_code, "127.0.0.1", echo_server.port)
    assert _result(cloud, jid) == errno.ECONNREFUSED
    pits = [p for p in cloud.info(jid, ["pitfalls"])[jid]["pitfalls"] if p["id"] == "separate-network"]
    assert pits and f"127.0.0.1:{echo_server.port}" in pits[0]["message"], pits
    assert echo_server.connections == 0


def test_private_address_is_refused_at_once(cloud: Any) -> None:
    """An address of the client's private network is refused by the simulator, not left to time out."""
    error = _failure(cloud, cloud.call(exchange, "10.255.255.1", 9, b"x"))
    assert error.exc_type == "ConnectionRefusedError", error
    assert "10.255.255.1 is your private network" in str(error)


def test_udp_to_the_clients_loopback_is_refused(cloud: Any) -> None:
    """UDP ``sendto`` to the client's loopback is refused too, and nothing arrives."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        error = _failure(cloud, cloud.call(send_udp, "127.0.0.1", port))
        assert error.exc_type == "ConnectionRefusedError"
        assert "the service must allow external access" in str(error)
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(100)


def test_refusal_that_the_job_swallowed_is_a_pitfall(cloud: Any, echo_server: EchoServer) -> None:
    """A job that catches the refusal and returns normally gets a ``separate-network`` pitfall naming the address."""
    jid = cloud.call(swallow_refusal, echo_server.port)
    assert _result(cloud, jid) == "gave up quietly"
    pits = [p for p in cloud.info(jid, ["pitfalls"])[jid]["pitfalls"] if p["id"] == "separate-network"]
    assert pits and f"127.0.0.1:{echo_server.port}" in pits[0]["message"], pits


def test_worker_channel_keeps_working_after_a_refusal(cloud: Any, echo_server: EchoServer) -> None:
    """The worker's own socket to the client is not affected: a refused job can still use the cloud API."""
    assert _result(cloud, cloud.call(refused_then_use_the_cloud, echo_server.port)) == ("refused", 32)


@pytest.mark.parametrize("entry", ["127.0.0.1:{port}", "127.0.0.1"], ids=["host:port", "host"])
def test_allow_hosts_opens_a_service(start: Callable, echo_server: EchoServer, entry: str) -> None:
    """With the service in ``allow_hosts`` the job connects and a byte goes both ways."""
    cloud = start(allow_hosts=[entry.format(port=echo_server.port)])
    assert _result(cloud, cloud.call(exchange, "127.0.0.1", echo_server.port, b"allowed")) == b"ack:allowed"
    assert echo_server.received == [b"allowed"]


def test_allow_hosts_by_name(start: Callable, echo_server: EchoServer) -> None:
    """``localhost:<port>`` in ``allow_hosts`` lets a job connect to ``localhost`` on that port."""
    cloud = start(allow_hosts=[f"localhost:{echo_server.port}"])
    assert _result(cloud, cloud.call(exchange, "localhost", echo_server.port, b"named")) == b"ack:named"


def test_allow_hosts_opens_only_the_listed_port(start: Callable) -> None:
    """Another port of an allowed host stays closed."""
    first, second = EchoServer(), EchoServer()
    try:
        cloud = start(allow_hosts=[f"127.0.0.1:{first.port}"])
        assert _result(cloud, cloud.call(exchange, "127.0.0.1", first.port, b"one")) == b"ack:one"
        error = _failure(cloud, cloud.call(exchange, "127.0.0.1", second.port, b"two"))
        assert error.exc_type == "ConnectionRefusedError"
        assert second.connections == 0
    finally:
        first.close()
        second.close()
