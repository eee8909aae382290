"""Operator tools on the live state: explain, what-if, replay, event, rebuild."""
