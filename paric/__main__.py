"""``python -m paric <command>``: the same as the ``paric`` console script."""
import sys

from paric.cli import main

sys.exit(main())
