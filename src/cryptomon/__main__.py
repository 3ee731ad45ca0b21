"""`python -m cryptomon`: the command line (`cli`)."""

import sys

from cryptomon.cli import main

if __name__ == "__main__":
    sys.exit(main())
