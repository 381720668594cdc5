"""``paric sweep``, as a script in the checkout (what ``ray job submit -- python pipelines/sweep.py`` runs);
see paric/commands/sweep.py for the flags, or ``python pipelines/sweep.py --help``."""
import sys

from paric.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main())
