"""Fault-injection runs (SPEC §6) and the checker they share with the short integration tests.

``make chaos`` runs the long versions (marker ``chaos``, ``SENDGATE_CHAOS=1``)
and prints one table row per fault; short versions run in ``make test``.
"""
