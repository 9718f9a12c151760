from lvdr.cli import main

raise SystemExit(main())
