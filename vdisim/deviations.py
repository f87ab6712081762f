"""Planted deviations: deliberate departures from documented VDI behaviour, switched on one at
a time, to prove that the conformance suite and the fuzzer can fail.

``VDISIM_DEVIATION=<name>[,<name>...]`` (read once, at import, in every vdisim process: the
engine inherits it from the process that starts it) turns deviations on.  Unset, every check is
one frozenset membership test on a constant empty set.  Each deviation is named after what it
breaks; ``KNOWN`` lists them with the spec section they contradict.  Never set this outside a
test of the test machinery.
"""

from __future__ import annotations

import os

__all__ = ["ENABLED", "KNOWN", "active"]

# name -> what the simulator then does wrong (spec section it contradicts).
KNOWN: dict[str, str] = {
    # conformance suite (issue 3)
    "close-noerror-with-open-devices": "Close returns NOERROR while devices are open (§2.7)",
    "close-open-without-abort": "Close returns VD_E_OPEN but does not abort the server (§2.7)",
    "create-twice": "Create succeeds on a set object that is not in DNE (§2.1)",
    "getcommand-after-abort": "GetCommand after abort still returns a queued command (§2.4, §8)",
    "complete-twice": "CompleteCommand accepts a second completion of one command (§2.5)",
    "clearerror-before-completions":
        "ClearError is sent while earlier commands are still outstanding (§6.6)",
    "complete-unrequested": "VDC_Complete is sent though VDF_RequestComplete was not (§6.4)",
    "signal-abort-dne-noerror": "SignalAbort in DNE returns NOERROR (§2.11)",
    "getconfiguration-dne-timeout": "GetConfiguration in DNE times out instead of PROTOCOL (§2.11)",
    "opendevice-invalid-name-protocol":
        "OpenDevice with an unknown name returns VD_E_PROTOCOL, not VD_E_INVALID (§2.3)",
    "abort-completion-not-995":
        "commands outstanding at an abort complete with ERROR_SUCCESS, not 995 (§2.6)",
    "server-close-device-no-close":
        "GetCommand after the server closed the device times out instead of VD_E_CLOSE (§2.4)",
    "map-handle-any": "MapBufferHandle accepts any handle (§2.9)",
    "getcommand-protocol-as-abort":
        "GetCommand on a closed set returns VD_E_ABORT instead of VD_E_PROTOCOL (§2.11)",
}


def _parse(value: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(n for n in names if n not in KNOWN and not n.startswith("race-"))
    if unknown:
        raise ValueError(f"VDISIM_DEVIATION: unknown deviation(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(KNOWN))}")
    return names


ENABLED: frozenset[str] = _parse(os.environ.get("VDISIM_DEVIATION", ""))


def active(name: str) -> bool:
    """True when deviation ``name`` is switched on in this process."""
    return name in ENABLED
