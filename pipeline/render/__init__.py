"""Render: a Post in, what each channel sends out.

Takes a `Post` and the config; gives the email `Edition` (MJML compiled once, a text part, MIME),
a `Snippet` or thread per network, the canonical footer and tagged links, and lint warnings.
"""
