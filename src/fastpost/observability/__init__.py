"""Observability: what the app tells about itself while it serves (metrics, logs, traces,
the live performance page) and the tools that diagnose it."""
