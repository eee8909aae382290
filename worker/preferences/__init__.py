"""The preference applier: keeps the state store current from ``preferences.changed``."""
