from iscsiboot.cli import main

raise SystemExit(main())
