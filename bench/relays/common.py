"""Shared plumbing of the baseline relays: command line, file limits and group rules.

The relays are deliberately the smallest servers that speak the article's chat frames well
enough for the benchmark scenarios, so that imchat's figures can be read as ratios against
"the same work on the same stack with nothing else in the way". This module owns what both
relays need and nothing of their data paths.
"""

from __future__ import annotations

import argparse
import logging
import resource
from dataclasses import dataclass
from urllib.parse import parse_qs


@dataclass(frozen=True)
class GroupRule:
    """Group `gid` has as members every connected user whose id is in [lo, hi]."""

    gid: int
    lo: int
    hi: int


def parse_group(text: str) -> GroupRule:
    """Parse `GID:LO:HI` (the relay trusts ids, so a range is enough to describe a group)."""
    gid, lo, hi = (int(part) for part in text.split(":"))
    return GroupRule(gid, lo, hi)


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--group",
        action="append",
        type=parse_group,
        default=[],
        metavar="GID:LO:HI",
        help="users with id in [LO, HI] are members of group GID (repeatable)",
    )
    parser.add_argument("--backlog", type=int, default=4096)
    return parser.parse_args()


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; 15,000 sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def groups_of(uid: int, rules: list[GroupRule]) -> list[int]:
    return [rule.gid for rule in rules if rule.lo <= uid <= rule.hi]


def user_id_from_query(query: str) -> int | None:
    """The `id` of `/chat?id=&token=`; the relays trust it (no database behind them)."""
    values = parse_qs(query).get("id")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
