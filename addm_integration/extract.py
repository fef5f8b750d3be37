"""``addm-extract`` (``python -m addm_integration.extract``): its arguments; the pipeline is in addm/extract.py."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from addm_integration.addm import topics
from addm_integration.addm.extract import Extract, TopicExtract
from addm_integration.app import cli
from addm_integration.errors import BadInput
from addm_integration.store.context import Context


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(
        "addm-extract",
        "Per-review judgments for one task: every review of the selected restaurants is asked the task's "
        "questions, and each answer is stored in data/answers/<domain>/cache.json. Reviews already judged are "
        "never asked again.",
        [
            "--task G1a --dry-run",
            "--task G1a --limit 10",
            "--task G1a --llm-mode 24hrbatch",
            "--task G1a --llm-mode 24hrbatch --wait --poll-interval 30",
        ],
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help="task id, e.g. G1a: the file data/tasks/<domain>/<task>.json (docs/formats.md)")
    what.add_argument("--topic", help="topic mode: a topic id, e.g. G1_allergy (its definition from addm-import)")
    what.add_argument("--all", action="store_true", help="topic mode: every topic definition of the workspace")
    parser.add_argument(
        "--models",
        type=topics.parse_models,
        default=None,
        metavar="MODEL:RUNS[:WEIGHT],...",
        help=f"topic mode: who judges each review how often, and the weight of each answer in the vote "
        f"(default {topics.DEFAULT_MODELS})",
    )
    cli.add_limit(parser, "only the first N restaurants of the dataset (0 = all, the default)")
    parser.add_argument(
        "--concurrency", type=cli.positive_int, default=8, metavar="C", help="ondemand calls in flight (8)"
    )

    def build(ctx: Context, args: Any) -> Extract:
        limit = args.limit or None
        if args.task is not None:
            if args.models is not None:
                raise BadInput("--models is for topic mode (--topic or --all), not --task")
            return Extract(ctx, args.task, args.domain, args.k, limit, args.model)
        chosen = (args.topic,) if args.topic else tuple(topics.topic_ids(ctx.ws.tasks_dir(args.domain)))
        quotas = args.models or topics.parse_models(topics.DEFAULT_MODELS)
        return TopicExtract(ctx, "", args.domain, args.k, limit, quotas[0].model, topics=chosen, quotas=quotas)

    return cli.run(parser, argv, Extract, build)


if __name__ == "__main__":
    sys.exit(main())
