import sys

from .task import main

sys.exit(main())
