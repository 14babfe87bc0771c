"""Tables 1-4 from ``results.json``: mean (std) DSC over every held-out case of every fold.

Each case is tested exactly once (in the fold that holds it out), so a cell is the mean and the
(population) standard deviation of the per-case DSC of all folds, as in the paper; the CSV also
has the number of cases, the mean of the per-fold means, HD95 and ASD (mm).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from .protocol import TABLES

__all__ = ["write_tables", "cell_stats", "per_case_table"]

FILE_NAMES = {"1": "table1_da", "2": "table2_dal", "3": "table3_joint", "4": "table4_ablation", "A": "tableA_accuracy"}


def _mean_std(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()), int(v.size)


def cell_stats(entries: list[dict]) -> dict:
    """Statistics of one table cell from its per-fold entries of results.json."""
    errors = sorted({e["error"] for e in entries if e.get("error")})
    cases = [c for e in entries for c in e.get("cases", [])]
    out = {"folds": len(entries), "failed_folds": sum(1 for e in entries if e.get("error")), "errors": errors}
    for metric in ("dice", "hd95", "asd"):
        m, s, n = _mean_std(c.get(metric) for c in cases)
        out[f"{metric}_mean"], out[f"{metric}_std"] = m, s
        if metric == "dice":
            out["cases"] = n
            fold_means = [_mean_std(c.get("dice") for c in e.get("cases", []))[0] for e in entries if e.get("cases")]
            out["dice_fold_mean"], out["dice_fold_std"], _ = _mean_std(fold_means)
    return out


def _fmt(st: dict, decimals: int = 3) -> str:
    if st["cases"] == 0:
        return "failed" if st["failed_folds"] else "n/a"
    text = f"{st['dice_mean']:.{decimals}f} ({st['dice_std']:.{decimals}f})"
    if st["failed_folds"]:
        text += f" [{st['failed_folds']} fold(s) failed]"
    return text


def per_case_table(cells: dict[tuple, list[dict]], key: str) -> str:
    """Markdown: every test case (rows) under every method of table ``key`` (columns), as
    ``Dice / HD95 mm``, for the table's first column (its test modality); the last row is the mean."""
    table = TABLES[key]
    col = table.columns[0][0]
    rows = [(label, cells[(key, label, col)]) for label, _, _ in table.rows if (key, label, col) in cells]
    per_case: dict[str, dict[str, dict]] = {}
    folds: dict[str, int] = {}
    for label, entries in rows:
        for e in entries:
            for c in e.get("cases", []):
                per_case.setdefault(c["case"], {})[label] = c
                folds[c["case"]] = e["fold"]
    if not per_case:
        return ""
    head = "| case | test fold | " + " | ".join(label for label, _ in rows) + " |"
    lines = [f"**{table.title}: per case, Dice / HD95 (mm)**", "", head, "|---" * (len(rows) + 2) + "|"]

    def cell(c: dict | None) -> str:
        if c is None:
            return "-"
        hd = c.get("hd95")
        return f"{c['dice']:.3f}" + (f" / {hd:.1f}" if hd is not None and math.isfinite(hd) else "")

    for case in sorted(per_case):
        lines.append(f"| {case} | {folds[case]} | " + " | ".join(cell(per_case[case].get(label)) for label, _ in rows) + " |")
    means = []
    for label, entries in rows:
        st = cell_stats(entries)
        means.append(f"**{st['dice_mean']:.3f}** / {st['hd95_mean']:.1f}" if st["cases"] else "-")
    lines.append("| mean | | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def write_tables(root: str | Path, results: dict | None = None) -> str:
    """Writes ``table<N>_<name>.md/.csv`` per table present in results, and ``tables.md`` (all of them)."""
    root = Path(root)
    if results is None:
        results = json.loads((root / "results.json").read_text())
    cells: dict[tuple, list[dict]] = {}
    for e in results["cells"]:
        cells.setdefault((e["table"], e["row"], e["column"]), []).append(e)
    md_all = []
    for key, table in TABLES.items():
        if not any(k[0] == key for k in cells):
            continue
        col_labels = [c[0] for c in table.columns]
        lines = [f"**{table.title}**", "", "| Method | " + " | ".join(col_labels) + " |", "|---" * (len(col_labels) + 1) + "|"]
        rows_csv = []
        for row_label, _, method in table.rows:
            if not any((key, row_label, c) in cells for c in col_labels):
                continue
            texts = []
            for col in col_labels:
                entries = cells.get((key, row_label, col), [])
                if not entries:
                    texts.append("not run")
                    continue
                st = cell_stats(entries)
                texts.append(_fmt(st))
                rows_csv.append({"table": key, "method": row_label, "method_key": method, "column": col, **{k: v for k, v in st.items() if k != "errors"}, "errors": "; ".join(st["errors"])})
            lines.append(f"| {row_label} | " + " | ".join(texts) + " |")
        md = "\n".join(lines) + "\n"
        if len(table.columns) == 1:  # one test: its per-case table too
            md += "\n" + per_case_table(cells, key)
        md_all.append(md)
        (root / f"{FILE_NAMES[key]}.md").write_text(md)
        with open(root / f"{FILE_NAMES[key]}.csv", "w", newline="") as f:
            fields = ["table", "method", "method_key", "column", "dice_mean", "dice_std", "cases", "folds", "failed_folds",
                      "dice_fold_mean", "dice_fold_std", "hd95_mean", "hd95_std", "asd_mean", "asd_std", "errors"]
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in rows_csv:
                w.writerow({k: r.get(k) for k in fields})
    text = "\n".join(md_all)
    (root / "tables.md").write_text(text)
    return text
