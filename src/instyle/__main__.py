from instyle.apps.cli import main

raise SystemExit(main())
