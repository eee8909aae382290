"""Operator tools: rebuild, explain, replay, traffic generation, bench and the demo."""
