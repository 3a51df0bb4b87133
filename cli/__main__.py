from alanet.main import main

raise SystemExit(main())
