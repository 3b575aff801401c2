import sys

from expeditor.cli import main

sys.exit(main())
