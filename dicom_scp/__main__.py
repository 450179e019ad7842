"""``python -m dicom_scp [--config FILE]``: the DICOM SCP as its own process (see :mod:`dicom_scp.process`)."""

import sys

from .process import main

sys.exit(main())
