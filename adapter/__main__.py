"""`python -m adapter`: same as the `service-builder` command."""

import sys

from adapter.cli import main

sys.exit(main())
