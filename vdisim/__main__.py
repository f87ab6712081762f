from vdisim.cli import main

raise SystemExit(main())
