from tunehub.cli.main import main

raise SystemExit(main())
