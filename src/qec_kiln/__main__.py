"""``python -m qec_kiln`` is the ``qec-kiln`` command."""

import sys

from qec_kiln._command._main import main

if __name__ == "__main__":
    sys.exit(main())
