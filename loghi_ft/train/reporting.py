"""What a training run tells its user: log lines, metrics.csv and its plots, and a clean stop on Ctrl+C."""

from __future__ import annotations

import csv
import io
import signal
import sys
import threading
import time
from pathlib import Path

from loghi_ft.atomic import write_atomic


def write_metrics(run_dir: Path, rows: list[dict], metric: str = "cer", plotted: tuple[str, ...] = ("cer",)) -> None:
    """metrics.csv, loss.png and METRIC.png (the `plotted` validation figures) from all validations so far, each
    replaced atomically. A figure that is None was not measured: empty in the CSV, a gap in the plot."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "metrics.csv", buf.getvalue().encode("utf-8"))
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    steps = [r["step"] for r in rows]
    figures = ((f"val_{k}", f"validation {FIGURE_NAMES.get(k, k)}") for k in plotted)
    for name, series, ylabel in (("loss.png", (("train_loss", "train"), ("val_loss", "validation")), "loss per sample"),
                                 (f"{metric}.png", tuple(figures), FIGURE_NAMES.get(metric, metric))):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for key, label in series:
            values = [r[key] for r in rows]
            if any(x is not None for x in values):
                ax.plot(steps, [float("nan") if x is None else x for x in values], marker="o", markersize=3,
                        label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        if name != "loss.png":
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png")
        plt.close(fig)
        write_atomic(run_dir / name, png.getvalue())


FIGURE_NAMES = {"cer": "CER", "wer": "WER", "score": "score", "baseline_f1": "baseline F1",
                "region_miou": "region mean IoU"}


class Log:
    """Lines for the user: stdout and train.log (rank 0 only)."""

    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        print(message, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


class StopRequest:
    """Ctrl+C / SIGTERM: finish the current step, write last/, leave; a second Ctrl+C aborts at once."""

    def __init__(self, announce: bool = True):
        self.signal: str | None = None
        self.previous = {}
        self.announce = announce

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; a caller in another thread stops us its own way
        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, self.handle)

    def uninstall(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        if self.announce:
            print(f"\n{self.signal}: stopping after this step and writing last/ (Ctrl+C again to abort at once)",
                  file=sys.stderr, flush=True)
