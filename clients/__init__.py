"""Clients of the HTTP service: a Python client and a command-line client (HTTP only)."""
