"""`python -m switchyard` runs the command line."""

from switchyard.cli import app

app()
