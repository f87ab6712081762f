"""Sans-I/O protocol core: codes, records and state tables.  No sockets, threads or clocks."""

from vdisim.protocol.codes import *  # noqa: F403
from vdisim.protocol.records import VDConfig, check_client_config, check_server_configuration
from vdisim.protocol.states import (
    ClientCall,
    ClientState,
    Cond,
    DeviceEvent,
    DeviceState,
    ServerCall,
    ServerState,
    client_transition,
    device_transition,
    server_transition,
)

__all__ = [
    "ClientCall", "ClientState", "Cond", "DeviceEvent", "DeviceState", "ServerCall",
    "ServerState", "VDConfig", "check_client_config", "check_server_configuration",
    "client_transition", "device_transition", "server_transition",
]
