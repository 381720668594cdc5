"""``paric precompute``, as a script in the checkout (what ``ray job submit -- python pipelines/precompute.py`` runs);
see paric/commands/precompute.py for the flags, or ``python pipelines/precompute.py --help``."""
import sys

from paric.commands.precompute import main

if __name__ == "__main__":
    sys.exit(main())
