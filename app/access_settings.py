"""The access policy's settings and what "beyond loopback" means: read by the app's
settings (to validate a bind address) and by the policy itself (app/access.py), so the
settings need not import the policy that reads them."""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

from pydantic import BaseModel, Field


class AccessSettings(BaseModel):
    """``CIRCUITLAB_ACCESS__*``; the token itself is ``CIRCUITLAB_API_TOKEN``."""

    insecure_no_token: bool = Field(
        False, description="Serve beyond localhost WITHOUT a token: anyone who can reach "
                           "the port may write labels, queue jobs and occupy the model. "
                           "`circuitlab serve --insecure-no-token`.")
    protect_reads: bool = Field(
        False, description="Beyond localhost, reading pages and stored runs needs the "
                           "token too (sign in at /login).")
    trusted_origins: list[str] = Field(
        default_factory=list, description="Origins besides the app's own whose form posts "
                                          "are accepted, e.g. https://lab.example.org "
                                          "behind a TLS proxy.")


def is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@lru_cache(maxsize=32)
def binds_beyond_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on any non-loopback address. A name is resolved
    (what the server will bind); one that does not resolve counts as beyond loopback."""
    if host in ("", "0.0.0.0", "::"):
        return True
    if is_loopback_address(host):
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    return not infos or not all(is_loopback_address(str(i[4][0])) for i in infos)
