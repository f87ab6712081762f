"""Abort/close race fuzzing (issue 5; docs/fuzz.md): a turn-based scheduler over the hook points
of :mod:`vdisim.hooks`, a catalogue of races, checks against the abort model, shrinking and
replay files.  ``vdisim fuzz`` is :mod:`conformance.fuzz.cli`."""
