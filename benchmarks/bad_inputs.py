"""The bad-input table of issue #6: every bad request, its status and error, and whether the server
still answers a good query right after it.

Builds the tests' tiny service (small_cnn, 16-bit codes, 200 generated images, 1 MB upload limit)
in a temporary folder, serves it with waitress on a free loopback port and prints a Markdown table,
then one summary line. Exits 1 if any input got an unexpected status or broke the next good query.

    python -m benchmarks.bad_inputs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from retrieval.core.codes import to_hex
from retrieval.core.config import override
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.hostile import bad_inputs, markdown_table, run_bad_inputs
from testkit.servers import live_server
from testkit.service import BITS, LABELS, build_tiny_service

TOKEN = "bad-inputs-benchmark"
GOOD_ID = 1000


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = override(build_tiny_service(Path(tmp)), server={"admin_token": TOKEN})
        store = Store(cfg.db_url)
        good_code = to_hex(np.frombuffer(store.images([GOOD_ID])[GOOD_ID].code, np.uint8))
        store.close()
        cases = bad_inputs(BITS, cfg.server.max_upload_mb, good_code, TOKEN, LABELS[0], GOOD_ID)
        with live_server(create_app(cfg)) as url:
            outcomes = run_bad_inputs(url, cases, {"code": good_code, "radius": 3})
    print(markdown_table(outcomes))
    bad = [o for o in outcomes if not o.ok]
    print(
        f"\n{len(outcomes)} bad inputs: {sum(o.status == 200 for o in outcomes)} accepted and converted, "
        f"{sum(o.status >= 400 for o in outcomes)} refused with a JSON error, "
        f"{sum(o.status >= 500 for o in outcomes)} 5xx, "
        f"{sum(o.good_answered for o in outcomes)}/{len(outcomes)} next good queries answered; "
        f"{len(bad)} unexpected"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
