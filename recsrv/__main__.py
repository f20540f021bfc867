from recsrv.cli import main

raise SystemExit(main())
