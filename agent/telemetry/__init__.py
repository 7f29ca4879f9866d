"""Metrics, health endpoints and systemd notification."""
