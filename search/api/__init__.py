"""Search from Python on in-memory arrays: one call, the best model in hand.

Example:
    >>> from search.api import SearchResult, search
    >>> callable(search), SearchResult.__name__
    (True, 'SearchResult')
"""

from search.api.in_memory import search, study_toml
from search.api.result import SearchResult

__all__ = ["SearchResult", "search", "study_toml"]
