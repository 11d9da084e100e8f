"""The code version that runs, as recorded in etl_runs and sent in the User-Agent."""

from importlib.metadata import version

import requests

CODE_VERSION = version("quakecat")
USER_AGENT = (
    f"quakecat/{CODE_VERSION} (earthquake-catalog ETL) python-requests/{requests.__version__}"
)
