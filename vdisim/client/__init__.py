"""The VDI client library: what a backup tool calls (spec §2).

``VirtualDeviceSet`` / ``VirtualDevice`` mirror the VDI interfaces one to one; ``DeviceSet`` /
``VdiError`` are a thin Pythonic layer on top.
"""

from vdisim.client.api import Command, VirtualDevice, VirtualDeviceSet
from vdisim.client.pythonic import Device, DeviceSet, VdiError

__all__ = ["Command", "Device", "DeviceSet", "VdiError", "VirtualDevice", "VirtualDeviceSet"]
