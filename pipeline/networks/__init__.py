"""Each social network's way of counting a post: one Protocol, one module per network, one dict."""

from pipeline.networks.base import Network, grapheme_boundaries, graphemes
from pipeline.networks.bluesky import Bluesky
from pipeline.networks.mastodon import Mastodon
from pipeline.networks.x import X

NETWORKS: dict[str, type[Network]] = {n.name: n for n in (X, Mastodon, Bluesky)}

__all__ = ["NETWORKS", "Network", "grapheme_boundaries", "graphemes"]
