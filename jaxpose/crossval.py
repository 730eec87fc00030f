"""Cross-validation summary: per-fold and mean MAE of the runs of a fold sweep.

    jaxpose sweep --config experiments/hybrid_biwi_cv8.py --workdir runs/hybrid_cv8 ...
    python -m jaxpose.crossval runs/hybrid_cv8

Every run directory under the workdir that holds `config.json` (written by
`jaxpose train`) and `eval.json` (written by its evaluation) is one fold; its
score is the eval.json row of its own held-out set, `data.name:data.eval_split`
(the fold's test split, which the fold's training never read). The summary
gives each fold's MAE, the mean over folds (each fold weighs the same: the
papers' "average of the folds") and the MAE over all test frames (folds
weighted by their frame count; exact, since an MAE is a mean over frames).
It is printed and written to `<workdir>/cv_summary.json`. Runs without
eval.json (unfinished) and directories with eval.json but no config.json
(e.g. an ensemble/ report) are listed, not scored; two runs of one fold are
an error.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from jaxpose import metrics

KEYS = (*metrics.ANGLE_NAMES, "mean")


def _held_out_row(run: pathlib.Path) -> tuple[str, dict]:
    """(fold name "dataset:split", its MAE row) of one run directory; ValueError naming the file."""
    config = json.loads((run / "config.json").read_text())
    try:
        fold = f"{config['data']['name']}:{config['data']['eval_split']}"
    except (KeyError, TypeError):
        raise ValueError(f"{run / 'config.json'}: no data.name / data.eval_split") from None
    results = json.loads((run / "eval.json").read_text())
    row = results.get(fold)
    if not isinstance(row, dict) or not all(k in row for k in (*KEYS, "num_images")):
        raise ValueError(f"{run / 'eval.json'}: no MAE row for its held-out set {fold} (rows: {', '.join(results)})")
    return fold, {k: float(row[k]) for k in KEYS} | {"num_images": int(row["num_images"])}


def summarize(workdir: str | pathlib.Path, expected: int | None = None) -> dict[str, Any]:
    """Per-fold MAE, mean over folds and MAE over all frames of the fold runs under workdir.

    expected: the number of folds of the design (8 for BIWI cv8); fewer
    scored folds are reported as "missing" (the means then cover only the
    scored ones). Raises FileNotFoundError without any scored run.
    """
    workdir = pathlib.Path(workdir)
    folds, runs, unscored = {}, {}, []
    for config_file in sorted(workdir.rglob("config.json")):
        run = config_file.parent
        if not (run / "eval.json").is_file():
            unscored.append(f"{run}: no eval.json (not evaluated yet)")
            continue
        fold, row = _held_out_row(run)
        if fold in folds:
            raise ValueError(f"two runs of the fold {fold}: {runs[fold]} and {run}")
        folds[fold], runs[fold] = row | {"workdir": str(run)}, run
    scored = {config_file.parent for config_file in workdir.rglob("config.json")}
    unscored += [f"{p.parent}: eval.json without config.json (not a fold run)"
                 for p in sorted(workdir.rglob("eval.json")) if p.parent not in scored]
    if not folds:
        raise FileNotFoundError(f"no fold run (config.json + eval.json) under {workdir}")
    frames = sum(row["num_images"] for row in folds.values())
    summary = {
        "folds": dict(sorted(folds.items())),
        "mean_of_folds": {k: sum(row[k] for row in folds.values()) / len(folds) for k in KEYS},
        "all_frames": {k: sum(row[k] * row["num_images"] for row in folds.values()) / frames for k in KEYS},
        "num_folds": len(folds),
        "num_images": frames,
        "not_scored": unscored,
    }
    if expected is not None and len(folds) < expected:
        summary["missing"] = expected - len(folds)
    (workdir / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The MAE table: one row per fold, then the mean of the folds and the MAE over all frames."""
    rows = {f"{name} ({row['num_images']})": row for name, row in summary["folds"].items()}
    rows[f"mean of {summary['num_folds']} folds"] = summary["mean_of_folds"]
    rows[f"all {summary['num_images']} frames"] = summary["all_frames"]
    lines = [metrics.format_mae_table(rows)]
    if summary.get("missing"):
        lines.append(f"{summary['missing']} fold(s) missing: the means cover {summary['num_folds']} folds")
    lines += [f"not scored: {line}" for line in summary["not_scored"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0].startswith("-"):
        print("usage: python -m jaxpose.crossval WORKDIR [EXPECTED_FOLDS]", file=sys.stderr)
        return 2
    try:
        summary = summarize(args[0], int(args[1]) if len(args) == 2 else None)
    except (FileNotFoundError, ValueError) as error:
        print(f"crossval: error: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"wrote {pathlib.Path(args[0]) / 'cv_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
