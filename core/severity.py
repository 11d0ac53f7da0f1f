"""The severity scale used everywhere: detections, alerts, notices, the console's colours."""

from __future__ import annotations

# Severity codes of Detections.severity and the alert store. 0 means "condition cleared" for that (rule, sensor).
SEVERITY_NAMES = {0: "clear", 1: "blue", 2: "yellow", 3: "orange", 4: "red"}
SEVERITY_CODES = {name: code for code, name in SEVERITY_NAMES.items()}
