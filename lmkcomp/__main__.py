"""`python -m lmkcomp` runs the command-line interface."""

from lmkcomp.cli import main

raise SystemExit(main())
