import sys

from revostack.cli import main

sys.exit(main())
