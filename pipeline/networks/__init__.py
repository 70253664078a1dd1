"""Networks: text in, its length as each social network counts it out.

One `Network` Protocol (`base.py`), one module per network (x, mastodon, bluesky, linkedin,
threads, telegram, facebook), and the `NETWORKS` dict in `registry.py`. No I/O: render cuts
snippets with these counts.
"""
