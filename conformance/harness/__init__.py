"""The client conformance harness (issue 4): run a VDI client under test against generated
server behaviour and judge it rule by rule from the wire (docs/client-harness.md)."""
