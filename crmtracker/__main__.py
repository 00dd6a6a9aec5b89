import sys

from crmtracker.cli import main

sys.exit(main())
