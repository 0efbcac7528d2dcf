"""B. Network: the default socket timeout, the firewall, the separate network.

Each case proves one quirk of QUIRKS.md section B through the public API of
the backend (``cloud``).
"""

from __future__ import annotations

import socket
import threading
from typing import List

import pytest

# --------------------------------------------------------------------------- jobs


def timeouts_in_job():
    import socket

    default = socket.getdefaulttimeout()
    with socket.socket() as s:
        new_socket = s.gettimeout()
    return default, new_socket


def clear_timeout_in_job():
    import socket

    socket.setdefaulttimeout(None)
    with socket.socket() as s:
        return socket.getdefaulttimeout(), s.gettimeout()


def listen_in_job():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        return s.getsockname()[1]


def connect_and_send(host, port, payload):
    import socket

    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(payload)
        return s.recv(100)


# ----------------------------------------------------------------------- helpers
class _EchoServer:
    """A server on the client's loopback that answers one connection with b'ack:' + what it read."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(60)
        self.port = self.sock.getsockname()[1]
        self.received: List[bytes] = []
        self.thread = threading.Thread(target=self._serve, name="conformance-echo", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            try:
                data = conn.recv(100)
                self.received.append(data)
                conn.sendall(b"ack:" + data)
            except OSError:
                pass

    def close(self) -> None:
        try:  # wakes a thread blocked in accept() (close() alone does not, on Linux)
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(60)


@pytest.fixture
def echo_server():
    server = _EchoServer()
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------------- cases
class TestNetwork:
    """Section B of the catalogue."""

    @pytest.mark.quirk("network-timeout")
    def test_network_timeout(self, cloud):
        """QUIRKS network-timeout: "In a job, the default socket timeout is 30 s
        (socket.getdefaulttimeout() == 30); a job can set it back to None." API.md: "The client's own
        default socket timeout is never changed; only jobs get the 30 s default."
        """
        client_default = socket.getdefaulttimeout()
        socket.setdefaulttimeout(7.5)  # a client value the job must not inherit
        try:
            default, new_socket = cloud.result(cloud.call(timeouts_in_job), timeout=60)
            cleared = cloud.result(cloud.call(clear_timeout_in_job), timeout=60)
            assert socket.getdefaulttimeout() == 7.5, "the client's default socket timeout was changed"
        finally:
            socket.setdefaulttimeout(client_default)
        assert default == 30.0
        assert new_socket == 30.0
        assert cleared == (None, None)

    @pytest.mark.quirk("network-timeout")
    def test_network_timeout_client_default_untouched(self, cloud):
        """API.md: "The client's own default socket timeout is never changed"."""
        before = socket.getdefaulttimeout()
        assert cloud.result(cloud.call(timeouts_in_job), timeout=60)[0] == 30.0
        assert socket.getdefaulttimeout() == before

    @pytest.mark.quirk("no-listen")
    def test_no_listen(self, cloud):
        """QUIRKS no-listen: "A job cannot listen for incoming connections: listen() fails with a
        PermissionError explaining the firewall." Explain: "The error text itself."
        """
        jid = cloud.call(listen_in_job)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert info.value.exc_type == "PermissionError", info.value.exc_type
        assert "firewall" in str(info.value).lower()

    @pytest.mark.quirk("separate-network")
    def test_separate_network(self, cloud, echo_server):
        """QUIRKS separate-network: "The cloud is on another network: a job cannot reach services on the
        client's loopback or private addresses unless they were opened up (setting allow_hosts)."
        API.md: "a refused connection to the client's network is a ConnectionRefusedError ... with an
        explaining message" ("Error text saying the service must allow external access").
        """
        jid = cloud.call(connect_and_send, "127.0.0.1", echo_server.port, b"from-job")
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert info.value.exc_type == "ConnectionRefusedError", info.value.exc_type
        assert "external" in str(info.value).lower()
        assert echo_server.received == [], "the job reached the client's loopback"

    @pytest.mark.quirk("separate-network")
    def test_separate_network_allow_hosts_opens_a_service(self, start_cloud, echo_server):
        """QUIRKS separate-network: a service of the client's network is reachable once "opened up
        (setting allow_hosts)"; and no-listen: "Outgoing connections work."
        """
        cloud = start_cloud(allow_hosts=[f"127.0.0.1:{echo_server.port}"])
        jid = cloud.call(connect_and_send, "127.0.0.1", echo_server.port, b"allowed")
        assert cloud.result(jid, timeout=60) == b"ack:allowed"
        assert echo_server.received == [b"allowed"]
