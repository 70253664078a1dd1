"""The networks by name: NETWORKS maps each one's name to its counter."""

from pipeline.networks.base import Network
from pipeline.networks.bluesky import Bluesky
from pipeline.networks.facebook import Facebook
from pipeline.networks.linkedin import LinkedIn
from pipeline.networks.mastodon import Mastodon
from pipeline.networks.telegram import Telegram
from pipeline.networks.threads import Threads
from pipeline.networks.x import X

NETWORKS: dict[str, type[Network]] = {
    n.name: n for n in (X, Mastodon, Bluesky, LinkedIn, Threads, Telegram, Facebook)}
