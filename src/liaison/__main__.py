"""Entry point for ``python -m liaison``."""

from liaison.cli import main

raise SystemExit(main())
