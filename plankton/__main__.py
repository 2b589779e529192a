import sys

from plankton.cli import main

sys.exit(main())
