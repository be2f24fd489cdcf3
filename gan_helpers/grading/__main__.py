"""``python -I -m gan_helpers.grading``: the grader's worker (scores) or, with ``--run``,
the limited process that executes a notebook."""

from .scoring import _main

_main()
