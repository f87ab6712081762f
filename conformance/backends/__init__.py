"""Conformance backends (see conformance.backend)."""
