from activelead.cli import main

raise SystemExit(main())
