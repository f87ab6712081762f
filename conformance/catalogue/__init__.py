"""Rule catalogue modules (see conformance.rules)."""
