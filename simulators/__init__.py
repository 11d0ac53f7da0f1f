"""Field-device simulators, fault scenarios with ground truth, feed replay and alert scoring.

Simulators speak to the pipeline only over MQTT or feed files; they share the payload codecs of `ingest.codecs`.
"""
