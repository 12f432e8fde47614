"""``python -m fairqueue`` runs the command-line interface."""

from fairqueue.cli import main

main()
