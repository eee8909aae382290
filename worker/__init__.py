"""sendgate: a streaming send-gate for outbound email and SMS requests."""

__version__ = "0.1.0"
