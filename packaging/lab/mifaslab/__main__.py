from mifaslab.cli import main

raise SystemExit(main())
