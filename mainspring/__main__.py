"""``python -m mainspring``: the command line, as the ``mainspring`` script runs it."""

from mainspring.cli import main

main()
