"""Which addresses a target may have, and every way a host can spell one.

A target may only be a public address. The policy looks through the IPv6
forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo)
and judges the address inside, so `::ffff:127.0.0.1` is loopback like
`127.0.0.1`. Hosts are also read the way the C resolver reads them:
`2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all mean 127.0.0.1, and
a check that only knew the dotted quad would let them through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from .config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Checked before the standard library's flags, which do not name them.
_NAMED_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("169.254.169.254/32"), "cloud metadata"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "cloud metadata"),
    (ipaddress.ip_network("100.64.0.0/10"), "shared (CGNAT)"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and the form's name."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if address.teredo is not None:
        return address.teredo[1], "Teredo"
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return low, "NAT64"
    # :: and ::1 are the IPv6 unspecified and loopback addresses themselves.
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return low, "IPv4-compatible"
    return None


def address_block_reason(
    address: IPAddress, allowed: Sequence[IPNetwork]
) -> str | None:
    """Why this address may not be a target, or None if it may."""
    if _is_allowed(address, allowed):
        return None
    embedded = embedded_ipv4(address)
    if embedded is not None:
        inner, form = embedded
        reason = address_block_reason(inner, allowed)
        if reason is not None:
            return f"{reason}, as {form} {inner}"
        # A Teredo address also names its relay, which must be public too.
        if form != "Teredo":
            return None
        teredo = address.teredo if isinstance(address, ipaddress.IPv6Address) else None
        if teredo is None or teredo[0].is_global:
            return None
        return "Teredo relay not globally routable"
    return _range_reason(address)


def _is_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    return any(
        address.version == network.version and address in network for network in allowed
    )


def _range_reason(address: IPAddress) -> str | None:
    for network, label in _NAMED_RANGES:
        if address.version == network.version and address in network:
            return label
    if address.is_global and not address.is_multicast:
        return None
    for label, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return label
    return "not globally routable"


def literal_address(host: str) -> IPAddress | None:
    """The address a host names without any lookup, or None for a name.

    Accepts IPv6 literals (with or without brackets or a zone) and every
    IPv4 spelling the C resolver accepts: one to four parts, each decimal,
    octal (leading 0) or hexadecimal (0x), the last part filling the rest.
    """
    text = host.strip("[]").split("%", 1)[0]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _numeric_ipv4(text[:-1] if text.endswith(".") else text)


def _numeric_ipv4(text: str) -> ipaddress.IPv4Address | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(p) for p in parts):
        return None
    numbers = [_parse_number(part) for part in parts]
    *head, last = numbers
    if any(number > 255 for number in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (24 - 8 * index)
    return ipaddress.IPv4Address(value)


def _parse_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def is_canonical(host: str, address: IPAddress) -> bool:
    """Whether the host is the address written the usual way."""
    text = host.strip("[]").split("%", 1)[0]
    return isinstance(address, ipaddress.IPv6Address) or text == str(address)
