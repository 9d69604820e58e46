import sys

from rpo.cli import main

sys.exit(main())
