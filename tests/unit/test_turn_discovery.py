"""RFC 5780 behaviour discovery in the core: OTHER-ADDRESS, RESPONSE-ORIGIN, CHANGE-REQUEST."""

from __future__ import annotations

import os
import random

from relay.stun.attributes import (
    ChangeRequest,
    ErrorCodeAttr,
    OtherAddress,
    Padding,
    ResponseOrigin,
    ResponsePort,
    UnknownAttributes,
    XorMappedAddress,
)
from relay.stun.constants import AttrType, MessageClass, Method
from relay.stun.message import Message, decode_message, encode_message
from relay.turn.addresses import FiveTuple, Transport
from relay.turn.config import DiscoveryAddresses, TurnConfig
from relay.turn.core import TurnCore
from relay.turn.effects import SendToClient
from relay.turn.ports import MemoryRelayPorts, PortPool

PRIMARY = ("198.18.0.2", 3478)
DISCOVERY = DiscoveryAddresses(("198.18.0.2", "198.18.0.3"), (3478, 3479))
CLIENT = FiveTuple(("198.18.1.10", 40000), PRIMARY, Transport.UDP)


def core(discovery: DiscoveryAddresses | None = DISCOVERY) -> TurnCore:
    ports = MemoryRelayPorts(("198.18.0.2",), PortPool(50000, 50009, random.Random(1)))
    return TurnCore(TurnConfig(discovery=discovery), ports)


def binding(c: TurnCore, *attrs: object, five_tuple: FiveTuple = CLIENT) -> SendToClient:
    msg = Message.request(Method.BINDING, os.urandom(12), *attrs)  # type: ignore[arg-type]
    effects = c.handle_client(0.0, five_tuple, encode_message(msg))
    assert len(effects) == 1 and isinstance(effects[0], SendToClient)
    return effects[0]


def test_discovery_binding_reports_other_address_and_origin() -> None:
    out = binding(core())
    reply = decode_message(out.data)
    other = reply.get(OtherAddress)
    origin = reply.get(ResponseOrigin)
    assert other is not None and (str(other.ip), other.port) == ("198.18.0.3", 3479)
    assert origin is not None and (str(origin.ip), origin.port) == PRIMARY
    assert out.five_tuple == CLIENT


def test_discovery_change_ip_and_port_answers_from_the_other_socket() -> None:
    out = binding(core(), ChangeRequest(change_ip=True, change_port=True))
    assert out.five_tuple.server == ("198.18.0.3", 3479)
    origin = decode_message(out.data).get(ResponseOrigin)
    assert origin is not None and (str(origin.ip), origin.port) == ("198.18.0.3", 3479)


def test_discovery_change_port_only() -> None:
    out = binding(core(), ChangeRequest(change_ip=False, change_port=True))
    assert out.five_tuple.server == ("198.18.0.2", 3479)


def test_discovery_change_ip_only_from_alternate_socket() -> None:
    alt = FiveTuple(CLIENT.client, ("198.18.0.3", 3479), Transport.UDP)
    out = binding(core(), ChangeRequest(change_ip=True, change_port=False), five_tuple=alt)
    assert out.five_tuple.server == ("198.18.0.2", 3479)
    other = decode_message(out.data).get(OtherAddress)
    assert other is not None and (str(other.ip), other.port) == PRIMARY


def test_discovery_response_port_redirects_the_answer() -> None:
    out = binding(core(), ResponsePort(41000))
    assert out.five_tuple.client == ("198.18.1.10", 41000)
    mapped = decode_message(out.data).get(XorMappedAddress)
    assert mapped is not None and mapped.port == 40000


def test_discovery_padding_is_echoed() -> None:
    reply = decode_message(binding(core(), Padding(bytes(400))).data)
    padding = reply.get(Padding)
    assert padding is not None and len(padding.data) == 400


def test_discovery_off_change_request_gets_420() -> None:
    reply = decode_message(binding(core(None), ChangeRequest(True, True)).data)
    assert reply.msg_class is MessageClass.ERROR
    err, unknown = reply.get(ErrorCodeAttr), reply.get(UnknownAttributes)
    assert err is not None and err.code == 420
    assert unknown is not None and unknown.types == (AttrType.CHANGE_REQUEST,)


def test_discovery_off_binding_has_no_other_address() -> None:
    reply = decode_message(binding(core(None)).data)
    assert reply.get(OtherAddress) is None and reply.get(ResponseOrigin) is None


def test_discovery_change_request_over_tcp_is_400() -> None:
    tcp = FiveTuple(CLIENT.client, PRIMARY, Transport.TCP)
    reply = decode_message(binding(core(), ChangeRequest(True, False), five_tuple=tcp).data)
    err = reply.get(ErrorCodeAttr)
    assert err is not None and err.code == 400
