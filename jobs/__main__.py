import sys

from jobs.task import main

sys.exit(main())
