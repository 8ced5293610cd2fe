"""Study files and their search spaces: a TOML file becomes a validated :class:`StudySpec`.

Example:
    >>> from search.spec import load_study
    >>> load_study("overfit30_memorize").objective
    'memorize'
"""

from search.errors import SpaceError
from search.spec.space import Choice, Fixed, FloatRange, IntRange, Param
from search.spec.studyfile import (
    StudySpec,
    known_studies,
    load_study,
    monitor_of,
    spaces_dir,
    spec_from_dict,
)

__all__ = [
    "Choice",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Param",
    "SpaceError",
    "StudySpec",
    "known_studies",
    "load_study",
    "monitor_of",
    "spaces_dir",
    "spec_from_dict",
]
