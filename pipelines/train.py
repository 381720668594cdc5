"""``paric train``, as a script in the checkout (what ``ray job submit -- python pipelines/train.py`` runs);
see paric/commands/train.py for the flags, or ``python pipelines/train.py --help``."""
import sys

from paric.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
