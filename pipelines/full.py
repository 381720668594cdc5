"""``paric run``, as a script in the checkout (what ``ray job submit -- python pipelines/full.py`` runs);
see paric/commands/run.py for the flags, or ``python pipelines/full.py --help``."""
import sys

from paric.commands.run import main

if __name__ == "__main__":
    sys.exit(main())
