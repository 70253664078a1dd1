"""Intake: the user's files and feeds in, Posts out.

Takes `posts/` (Markdown with front matter) and the feeds named in `sources:`; gives validated,
sanitized `Post`s, and a one-line problem for every file or entry that could not be read.
"""
