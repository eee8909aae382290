"""Kafka plumbing of sendgate: client configs, admin, transactions, error classification, client recovery."""
