"""`python -m dahell ...`"""

from dahell.cli import main

raise SystemExit(main())
