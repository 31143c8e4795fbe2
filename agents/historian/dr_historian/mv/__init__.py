"""Measurement and verification: day-matching baselines and per-event performance (no platform import)."""
