"""Who opened or clicked: a person, a privacy proxy (machine open) or a security scanner
(bot click). All rules live here and are versioned: when they change, raise VERSION and run
`manage.py tracking_reclassify`, which applies them to the stored history.

Version 1:
- Opens
  - "apple_mpp": Apple Mail Privacy Protection fetches every image through Apple's proxies
    (Apple's 17.0.0.0/8) with the bare user agent "Mozilla/5.0", whether or not anyone reads.
  - "prefetch": fetched within PREFETCH_SECONDS of sending: no person opens that fast; mail
    servers and proxies prefetch on delivery.
  - "machine_agent": a user agent of a known scanner, HTTP library or crawler.
  - "head_request": a HEAD request (a browser or mail client GETs images).
- Clicks
  - "trap_link": the hidden link that no person sees (campaigns.tracking_links TRAP).
  - "head_request": link checkers send HEAD.
  - "machine_agent": as above.
  - "too_soon": within SCANNER_SECONDS of sending: scanners follow links on delivery.
  - "burst": BURST_LINKS or more different links of one mail (or any link and the trap)
    within BURST_SECONDS: a person clicks one link, a scanner all of them.
Everything else is human. Google's and Yahoo's image proxies fetch when the person opens the
mail, so they count as human opens.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

VERSION = 1

HUMAN, MACHINE, BOT = "human", "machine", "bot"
# Reasons other code reads back: the trap link and a scanner's burst of clicks.
TRAP_LINK, BURST = "trap_link", "burst"
PREFETCH_SECONDS = 2
SCANNER_SECONDS = 10
BURST_SECONDS = 5
BURST_LINKS = 3

APPLE_PROXY_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_PROXY_AGENT = "Mozilla/5.0"
_MACHINE_AGENT = re.compile(
    r"bot\b|crawler|spider|scanner|python-requests|python-urllib|aiohttp|httpx|curl/|wget/|"
    r"go-http-client|java/|okhttp|libwww|headlesschrome|phantomjs|barracuda|mimecast|"
    r"proofpoint|symantec|messagelabs|trendmicro|forcepoint|fortinet|sophos|"
    r"microsoft office protocol discovery|safelinks|linkscanner|urldefense",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ClickSeen:
    """A click of the same mail, for the burst rule: when, which link (its position in the
    mail, or its URL when only that is known, e.g. from the ESP), and whether it was the trap."""

    at: datetime
    link: int | str | None
    trap: bool = False


def _from_apple_proxy(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in APPLE_PROXY_NETWORKS)


@functools.lru_cache(maxsize=4096)
def machine_agent(user_agent: str) -> bool:
    # Cached: a batch holds the same few hundred agents again and again, and the search of a
    # long browser agent through every pattern is the costliest step of an open's verdict.
    return bool(_MACHINE_AGENT.search(user_agent))


def classify_open(
    *, user_agent: str, ip: str, method: str, at: datetime, sent_at: datetime | None
) -> Verdict:
    if user_agent.strip() == APPLE_PROXY_AGENT and _from_apple_proxy(ip):
        return Verdict(MACHINE, "apple_mpp")
    if method == "HEAD":
        return Verdict(MACHINE, "head_request")
    if machine_agent(user_agent):
        return Verdict(MACHINE, "machine_agent")
    if sent_at is not None and at - sent_at < timedelta(seconds=PREFETCH_SECONDS):
        return Verdict(MACHINE, "prefetch")
    return Verdict(HUMAN)


def classify_click(
    *,
    trap: bool,
    link: int | str | None,
    user_agent: str,
    method: str,
    at: datetime,
    sent_at: datetime | None,
    others: Iterable[ClickSeen],
) -> Verdict:
    """`others`: the other clicks of the same mail (stored and in the same batch)."""
    if trap:
        return Verdict(BOT, TRAP_LINK)
    if method == "HEAD":
        return Verdict(BOT, "head_request")
    if machine_agent(user_agent):
        return Verdict(BOT, "machine_agent")
    if sent_at is not None and at - sent_at < timedelta(seconds=SCANNER_SECONDS):
        return Verdict(BOT, "too_soon")
    window = timedelta(seconds=BURST_SECONDS)
    near = [other for other in others if abs(other.at - at) <= window]
    if any(other.trap for other in near):
        return Verdict(BOT, BURST)
    links = {other.link for other in near} | {link}
    if len(links) >= BURST_LINKS:
        return Verdict(BOT, BURST)
    return Verdict(HUMAN)
