"""The short fault campaign (docs/reliability.md) on the shared lab's running cluster: a bank
workload under a seeded schedule of faults (replica and agent kills, a frozen replica,
partitions both ways and one way, a lost data file rebuilt by recover.yml) and of our own
operations (tbctl restart and backup, backup.yml, rollout.yml whole and `--limit`), then every
invariant: no acknowledged transfer lost, nothing present that was never sent, linked chains
whole, balances explained, no second replica taken down by our tools while they knew one was
down, every begun operation audited at its end, every listed backup verifies.

The seed is fixed so a failure reruns with the same schedule (`tests/chaos/run --seed N`);
CHAOS_SEED and CHAOS_MINUTES override it. The report and the event log are kept in
target/chaos/.
"""

import json
import os
import shutil

import labctl
from chaos.campaign import campaign, explain, table

SEED = int(os.environ.get("CHAOS_SEED", "1"))
MINUTES = float(os.environ.get("CHAOS_MINUTES", "2"))


def test_short_campaign(cluster):
    out = labctl.REPO / "target" / "chaos" / f"e2e-seed{SEED}.d"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, mode=0o700)
    report = campaign(cluster, SEED, MINUTES, out)
    (out.parent / f"e2e-seed{SEED}.json").write_text(json.dumps(report, indent=2) + "\n")
    labctl.log("chaos:\n" + table(report))
    assert sum(report["faults"].values()) > 0, report
    assert report["acknowledged"] > 0, report
    assert not report["failed"], explain(report)
