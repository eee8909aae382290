"""Pure suppression rules (SPEC §2-4, §8): no I/O, so most tests run in milliseconds."""
