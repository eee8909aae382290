"""The gate: consume sends.requested → decide → produce, in Kafka transactions."""
