"""lmkcomp: a kit for the Google Landmarks v2 recognition and retrieval competitions."""

__version__ = "0.1.0"
