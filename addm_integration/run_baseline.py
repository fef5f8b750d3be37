"""``addm-baseline`` (``python -m addm_integration.run_baseline``): its arguments; the pipeline is in
addm/run_baseline.py."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from addm_integration.addm.run_baseline import Baseline
from addm_integration.app import cli
from addm_integration.store.context import Context


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(
        "addm-baseline",
        "Per-restaurant verdicts for one policy: each selected restaurant (its reviews and business record) is "
        "sent with the policy's agenda, and the verdicts are scored against the ground truth into "
        "results/baseline/<policy>_K<k>/results.json (_n<N>, _s<S> added for -n, --skip).",
        [
            "--policy G1_allergy_V2 --dry-run",
            "--policy G1_allergy_V2 -n 20",
            "--policy G1_allergy_V2 --skip 20 --limit 20 --dev",
            "--policy G1_allergy_V2 --llm-mode 24hrbatch",
        ],
    )
    parser.add_argument(
        "--policy",
        required=True,
        help="policy id, e.g. G1_allergy_V2 (G1/allergy/V2 accepted): its agenda is "
        "data/query/<domain>/<policy>_K<k>_prompt.txt (docs/formats.md)",
    )
    cli.add_limit(parser, "restaurants to run (0 = all, the default)", dest="n")
    parser.add_argument(
        "--skip", type=cli.non_negative_int, default=0, metavar="S", help="skip the first S restaurants (0)"
    )
    parser.add_argument("--dev", action="store_true", help="write to results/dev/<timestamp>_<run_dir>/ instead")
    parser.add_argument(
        "--concurrency", type=cli.positive_int, default=32, metavar="C", help="ondemand calls in flight (32)"
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="ask again for every restaurant, also those a finished run of this selection answered "
        "(default: only those without a verdict)",
    )

    def build(ctx: Context, args: Any) -> Baseline:
        return Baseline(
            ctx, args.policy, args.domain, args.k, args.n, args.skip, args.model, args.dev, rerun=args.rerun
        )

    return cli.run(parser, argv, Baseline, build)


if __name__ == "__main__":
    sys.exit(main())
