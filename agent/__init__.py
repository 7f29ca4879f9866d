"""Edge gateway agent: local MQTT -> edge validation -> durable disk spool -> idempotent Kafka."""

__version__ = "0.1.0"
