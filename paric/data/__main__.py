"""``python -m paric.data check <dir> --format <name>`` (see paric.data.check)."""
import sys

from paric.data.check import main

sys.exit(main())
