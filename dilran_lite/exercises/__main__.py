"""``python -m dilran_lite.exercises grade FOLDER --csv FILE``."""

import sys

from .grader import main

sys.exit(main())
