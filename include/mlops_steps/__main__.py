"""``python -m mlops_steps`` is the same command as ``mlops-step``."""

import sys

from mlops_steps.cli.main import main

sys.exit(main())
