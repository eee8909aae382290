"""Kafka clients of sendgate: admin, and the consumer/producer wrappers."""
