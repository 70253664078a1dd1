"""Web: the HTTP apps, requests in, pages and state changes out.

`pipeline serve` (one-click unsubscribe) and `pipeline preview --serve` (the marketers' preview
page: each post's rendering and state, and "Send test", which never writes the ledger).
"""
