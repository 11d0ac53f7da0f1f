"""`python -m citywatch` runs the command line."""
import sys

from citywatch.cli import main

sys.exit(main())
