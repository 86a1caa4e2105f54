"""``python -m kdlib.report index OUT_DIR``: rebuild the index page."""

import sys

from kdlib.report.index import main

sys.exit(main())
