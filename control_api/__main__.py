"""`python -m control_api --config activelead.yaml`: serve the control API."""

import sys

from control_api.cli import main

sys.exit(main())
