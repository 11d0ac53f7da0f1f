"""Which connection publishes for whom: a missing tester account is a PublishError, never a TypeError."""

from __future__ import annotations

import socket

import pytest

from simulators.publisher import TESTER, BrokerCredentials, FeedPublisher, PublishError


def test_identity_without_password_or_tester_is_refused():
    pub = FeedPublisher("127.0.0.1", 1, BrokerCredentials({"XM0001NOISE": "pw"}))
    assert pub.identity("XM0001NOISE") == "XM0001NOISE"
    with pytest.raises(PublishError, match="no broker password for device 'OTHER' and no tester account"):
        pub.identity("OTHER")


def test_connecting_the_tester_without_a_tester_account_is_a_publish_error():
    # A port that accepts TCP (so the broker probe passes) but is never asked for MQTT: the tester
    # account is checked before any client is made. Before: TypeError (cannot unpack None).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        pub = FeedPublisher("127.0.0.1", srv.getsockname()[1], BrokerCredentials({}))
        with pytest.raises(PublishError, match="^no tester account in the credentials$"):
            pub.connect([TESTER], timeout_s=1.0)
        pub.close()
