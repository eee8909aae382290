"""Benchmarking: the gate against the bare transactional loop, latency, rebuild, memory."""
