"""Training runs side by side: ``python -m realbogus.compare RUN_DIR [RUN_DIR ...] --out TABLE.csv``.

Examples::

    # two recipe probes, finished or still training, in one table
    python -m realbogus.compare experiments/probe/simple-ce-new experiments/probe/complex-ce-new --out probes.csv
    # every probe, with where each run's false positives come from on the validation split (kind, S/N bin)
    python -m realbogus.compare experiments/probe/*-new --out probes.csv --pass-rates probes_pass.csv
    # the same pass rates on the test split, for the final numbers
    python -m realbogus.compare experiments/train/quick-simple-ce-s0 --out t.csv --pass-rates p.csv --split test

Nothing is retrained or rescored: everything is read from the run folders
(:mod:`realbogus.evaluation.compare` says what each column is).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from realbogus.errors import report_errors

__all__ = ["main"]

_DESCRIPTION = """\
Tabulate training runs side by side: one row per run folder, finished or still training.

Reads each run folder (its state, config, last checkpoint, history, evaluation and Hydra's
record of the overrides) and writes one CSV row per run: its state (running, interrupted, failed,
done), epochs and optimizer steps done, precision, wall time of the last session, the validation
FPR at TPR 0.9 and loss after every epoch and the best FPR, the test AUC and FPR at TPR 0.9 with
its 95% interval (done runs only), and the train command that resumes or repeats it.
--pass-rates also writes every done run's pass rate per bogus kind and per S/N bin at TPR 0.9,
on the validation split unless --split test (recipes are chosen on validation). A short Markdown
table goes to stdout. Nothing is retrained or rescored.

Examples:
  python -m realbogus.compare experiments/probe/simple-ce-new experiments/probe/complex-ce-new --out probes.csv
  python -m realbogus.compare experiments/probe/*/ --out probes.csv --pass-rates probes_pass.csv
  python -m realbogus.compare experiments/train/quick-simple-ce-s0 --out t.csv --pass-rates p.csv --split test
"""


def _parser() -> argparse.ArgumentParser:
    from realbogus.evaluation.compare import SPLITS

    parser = argparse.ArgumentParser(prog="python -m realbogus.compare", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of python -m realbogus.train")
    parser.add_argument("--out", required=True, metavar="TABLE.csv", help="the table, one row per run")
    parser.add_argument("--pass-rates", metavar="PASS.csv", default=None,
                        help="also write the pass rates per bogus kind and S/N bin at TPR 0.9 (long format)")
    parser.add_argument("--split", choices=SPLITS, default="validation",
                        help="split of the pass rates (default: validation)")
    return parser


@report_errors
def main(argv: Sequence[str] | None = None) -> list[dict]:
    from realbogus.evaluation.compare import (
        COLUMNS, PASS_RATE_COLUMNS, compare_runs, markdown, open_run, pass_rate_rows, save_rows)

    args = _parser().parse_args(argv)
    rows = compare_runs(args.runs)
    rates = []
    if args.pass_rates:
        for path, row in zip(args.runs, rows):
            if row["state"] != "done":
                print(f"{row['run']}: {row['state']}, no pass rates yet", file=sys.stderr)
                continue
            rates += pass_rate_rows(open_run(path), row["run"], split=args.split)
    save_rows(args.out, rows, COLUMNS)
    print(markdown(rows), end="")
    print(f"wrote {args.out}")
    if args.pass_rates:
        save_rows(args.pass_rates, rates, PASS_RATE_COLUMNS)
        print(f"wrote {args.pass_rates} ({args.split} split)")
    return rows


if __name__ == "__main__":
    main()
