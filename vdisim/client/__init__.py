"""The VDI client library: what a backup tool calls (spec §2)."""

from vdisim.client.api import Command, VirtualDevice, VirtualDeviceSet

__all__ = ["Command", "VirtualDevice", "VirtualDeviceSet"]
