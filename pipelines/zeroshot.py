"""``paric zeroshot``, as a script in the checkout (what ``ray job submit -- python pipelines/zeroshot.py`` runs);
see paric/commands/zeroshot.py for the flags, or ``python pipelines/zeroshot.py --help``."""
import sys

from paric.commands.zeroshot import main

if __name__ == "__main__":
    sys.exit(main())
