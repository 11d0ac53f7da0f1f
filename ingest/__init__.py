"""Ingest: the MQTT collector, payload codecs (JSON envelope, HJ 212), row validation, dead-letter
store, line-protocol encoding, the durable spool and the InfluxDB writers.

Kept import-free so that `import ingest.codecs.hj212` (simulators) pulls in no service machinery.
"""
