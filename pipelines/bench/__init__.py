"""quakecat bench: the ETL's wall time, throughput and memory against the offline fake service.

The fake FDSN service runs in this process on 127.0.0.1, holding a generated catalogue (a steady
daily rate plus an aftershock sequence every July, so one month exceeds the 20,000-event search
limit at the default rate) and answering with an injected latency and a per-answer transfer cap.
The pipeline itself runs as a child process, exactly as a user runs it, so its peak RSS is its own:

- cold:  ``python -m pipelines.cli etl`` into a new database;
- floor: the cold run's requests (the same URLs, in the same order, as many in flight) issued by
  a minimal client that only reads the bodies: the least any pipeline could take for them;
- warm:  the same command again into the cold database (an upsert; whatever the pipeline can
  reuse from its cache, it does not fetch again);
- cpu:   parse + clean, transform and load in this process on bodies already received, pinned to
  one CPU;
- scale: a cold run over a ten-year catalogue, with no latency and no transfer cap.

Every child runs in a scratch directory with a Flyte config of its own, so Flyte's local cache
(and quakecat's partition store) starts empty and is removed with the bench: the cold run is cold
however often the bench runs. Prints a table and writes every figure, the machine and the
versions to ``--json``.
"""

from pipelines.bench.catalogue import build_catalogue
from pipelines.bench.command import main

__all__ = ["build_catalogue", "main"]
