"""``python -m worker`` is the ``sendgate`` command."""

from worker.cli import main

main()
