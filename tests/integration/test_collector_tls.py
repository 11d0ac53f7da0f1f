"""The collector over TLS (connections.mqtt.tls) on a real Mosquitto TLS listener: its client reads the socket
in large chunks and decodes PUBLISH packets in place (ingest/collector.py ReceiveClient), so over TLS, where
a read returns one TLS record at most and bytes can wait inside the SSL object, every message must still
arrive whole and once: many small ones and a payload that spans many TLS records."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.localstack import free_port, mosquitto_binary
from citywatch.service import wait_until
from config import load_config
from ingest.collector import MqttCollector

pytestmark = pytest.mark.integration


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_broker(tmp_path):
    """A Mosquitto with one TLS listener (a test CA's certificate for 127.0.0.1), anonymous clients allowed."""
    d = tmp_path
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
            "-days", "2", "-subj", "/CN=citywatch-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "srv.key"), "-out", str(d / "srv.csr"),
            "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(d / "srv.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-out", str(d / "srv.crt"), "-days", "2", "-extfile", str(d / "ext.cnf"))
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(f"""user root
persistence false
log_dest file {d / 'mosquitto.log'}
max_inflight_messages 0
max_queued_messages 0
listener {port} 127.0.0.1
allow_anonymous true
cafile {d / 'ca.crt'}
certfile {d / 'srv.crt'}
keyfile {d / 'srv.key'}
""")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port, d / "ca.crt"
    finally:
        proc.kill()
        proc.wait(10)



def test_every_message_arrives_whole_and_once_over_tls(tls_broker):
    port, ca = tls_broker
    cfg = load_config(env={})
    base = cfg.connections.mqtt
    mq = base.model_copy(update={"host": "127.0.0.1", "port": port, "username": None, "client_id": "cw-tls",
                                 "tls": base.tls.model_copy(update={"enabled": True, "ca_file": str(ca)})})
    got: list = []
    lock = threading.Lock()

    def sink(msg):
        with lock:
            got.append(msg)

    c = MqttCollector(mq, None, sink)
    c.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-tls", protocol=mqtt.MQTTv5)
    pub.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    try:
        assert c.wait_connected(30), c.last_error
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        topic = "city/xm/noise/S01/N01/data"
        big = b'{"ts":1700000000000,"values":{"leq":55.5}}' + b" " * 200_000  # ~13 TLS records
        sent = [f'{{"ts":{1700000000000 + i},"values":{{"leq":{50 + i % 10}}}}}'.encode() for i in range(3000)]
        infos = [pub.publish(topic, p, qos=1) for p in sent[:1500]]
        infos.append(pub.publish(topic, big, qos=1))
        infos += [pub.publish(topic, p, qos=1) for p in sent[1500:]]
        for info in infos:
            info.wait_for_publish(60)
        assert wait_until(lambda: len(got) >= len(sent) + 1, 60), f"{len(got)} of {len(sent) + 1} arrived"
        time.sleep(0.5)  # nothing more may come: the collector acks nothing here, and nothing is resent
        with lock:
            payloads = [m.payload for m in got]
        assert sorted(payloads) == sorted(sent + [big])
        assert all(m.topic == topic for m in got)
        assert len({m.token.mid for m in got}) == len(got)  # one packet id each: none handed on twice
    finally:
        pub.disconnect()
        pub.loop_stop()
        c.stop()
