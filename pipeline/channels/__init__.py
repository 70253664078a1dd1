"""Channels: planned Deliveries in, Receipts out; where a post actually goes.

One `Channel` Protocol (`base.py`), one module per channel type (smtp, outbox, x, mastodon,
bluesky, webhook, devto), built from `channels:` in config.yaml by `registry.py`.
"""
