"""`python3 -m harness.guest.intermediate ...`"""

import sys

from .cli import main

sys.exit(main())
