"""The operations console: a web app (Starlette, served by uvicorn) run by `citywatch console` in its own
process beside the service. It reads alerts over MQTT and from the alert store and sends operators' commands
through the store's command inbox, which the service validates and applies."""
