"""One module per schema revision, oldest first; each id is also in `store/revision.py` REVISIONS."""
