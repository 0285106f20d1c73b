"""``python -m jaxattack.train``."""

import sys

from jaxattack.train import main

sys.exit(main())
