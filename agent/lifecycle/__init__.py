"""Lifecycle events as data: one place emits the event, its log line and its metric."""
