"""free_port picks server ports below the kernel's ephemeral range, so a server restarted on its port (a killed
cluster node) never finds it taken as the source port of some outgoing connection."""

from __future__ import annotations

import socket

from citywatch import localstack


def test_ports_are_free_and_below_the_ephemeral_range():
    low = localstack._ephemeral_low()
    ports = {localstack.free_port() for _ in range(20)}
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:
        if low > localstack.LOW_PORT + 1000:
            assert localstack.LOW_PORT <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free a moment ago, and still (nothing here listens)


def test_without_a_known_range_the_kernel_picks(monkeypatch):
    monkeypatch.setattr(localstack, "_ephemeral_low", lambda: 0)
    port = localstack.free_port()
    assert 0 < port < 65536
