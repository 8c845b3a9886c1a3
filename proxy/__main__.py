"""`python -m proxy --config activelead.yaml`: the same as `activelead proxy`."""

from proxy.cli import main

raise SystemExit(main())
