"""Renderers: Post -> email Edition (email.py, text.py), Post -> Snippet (social.py, length.py)."""
