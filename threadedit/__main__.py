from threadedit.entry import main

raise SystemExit(main())
