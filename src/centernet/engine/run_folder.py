"""The run folder ``runs/<name>/``: resolved config, ``results.csv``, PNG plots, checkpoints, images."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

from centernet.config import Config  # noqa: E402


class RunFolder:
    """Everything one training run writes; only the main process writes."""

    def __init__(self, cfg: Config, resume: bool = False) -> None:
        self.root = self.path_of(cfg)
        if self.root.exists() and not resume and any(self.root.glob("*.pt")):
            raise FileExistsError(
                f"run folder {self.root} already holds checkpoints; pass --resume to continue it or choose another name="
            )
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        cfg.save(self.root / "config.yaml")

    @staticmethod
    def path_of(cfg: Config) -> Path:
        return Path(cfg.project) / cfg.name

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    def rows(self) -> list[dict[str, str]]:
        if not self.results_csv.exists():
            return []
        with self.results_csv.open(newline="") as f:
            return list(csv.DictReader(f))

    def append(self, row: dict[str, float | int | str]) -> None:
        """Add one epoch's row (rewrites the file so that new columns, such as AP, can appear)."""
        rows = [r for r in self.rows() if int(r["epoch"]) < int(row["epoch"])]  # a resumed epoch replaces its row
        self.replace_rows([*rows, row])

    def replace_rows(self, rows: list[dict]) -> None:
        """Rewrite ``results.csv`` with exactly ``rows`` (atomically; a resume restores the checkpoint's history)."""
        rows = [{k: str(v) for k, v in r.items()} for r in rows]
        if not rows:
            self.results_csv.unlink(missing_ok=True)
            return
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        tmp = self.results_csv.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.results_csv)
        self.plot(rows, columns)

    def plot(self, rows: list[dict[str, str]], columns: list[str]) -> None:
        """``losses.png`` (every loss column) and ``metrics.png`` (AP columns) from the rows."""
        self._plot(rows, [k for k in columns if k.endswith("loss")], "training loss", "losses.png", log=True)
        metric_keys = [k for k in columns if k in ("AP", "AP50", "AP75", "mAP_voc07") or k.endswith("moderate/ap11")]
        metric_keys = [k for k in metric_keys if any(r.get(k) for r in rows)]
        if metric_keys:
            self._plot(rows, metric_keys, "validation metric", "metrics.png", log=False)

    def _plot(self, rows: list[dict[str, str]], keys: list[str], ylabel: str, name: str, log: bool) -> None:
        """One PNG with a line per column against the epoch (epochs where the column is empty are skipped)."""
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]
            ax.plot(*zip(*points), marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.root / name, dpi=100)
        plt.close(fig)
