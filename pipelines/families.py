"""``paric families``, as a script in the checkout (what ``ray job submit -- python pipelines/families.py`` runs);
see paric/commands/families.py for the flags, or ``python pipelines/families.py --help``."""
import sys

from paric.commands.families import main

if __name__ == "__main__":
    sys.exit(main())
