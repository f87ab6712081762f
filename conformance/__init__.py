"""Conformance harness for VDI implementations and clients (built by later issues)."""
