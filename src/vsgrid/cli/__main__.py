import sys

from vsgrid.cli import main

sys.exit(main())
