"""Every setting of a training run, with its default and what it does: the one place they are defined.

`loghi-ft train --help`, recipes (`--config FILE`, keys as below), trailing `KEY=VALUE` overrides and the
`config.yaml` each run writes (a recipe that repeats it) all come from this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loghi_ft.settings import setting
from loghi_ft.train.augment import Augment

DATA, MODEL, RUN, TRAINING, HARDWARE = "data", "model", "run", "training", "hardware"
AUGMENTATION = "augmentation (probability per line; 0 switches one off)"


@dataclass
class RunSettings:
    """What every training run has, whatever it trains: where it goes, how long, how fast, on what."""
    output: Path | None = setting(None, "folder of runs: OUTPUT/NAME/ gets best_val/, last/, metrics and plots",
                                  group=RUN)
    model_name: str | None = setting(None, "name of the run (its folder under OUTPUT)", group=RUN)
    resume: bool = setting(False, "continue from OUTPUT/NAME/last/ where the run stopped", group=RUN)
    epochs: int = setting(50, "passes over the training data", group=TRAINING)
    batch_size: int = setting(16, "samples per optimizer step", group=TRAINING)
    learning_rate: float = setting(0.001, "peak learning rate, reached after the warm-up (0.0003 suits fine-tuning "
                                   "a good base model)", group=TRAINING)
    optimizer: str = setting("adamw", "adamw or rmsprop", choices=("adamw", "rmsprop"), group=TRAINING)
    warmup_steps: int = setting(200, "linear warm-up steps (at most a tenth of the run), then cosine decay to 5% "
                                "of the peak", group=TRAINING)
    weight_decay: float = setting(0.01, "decoupled weight decay on weights (not on biases and normalisation)",
                                  group=TRAINING)
    grad_clip: float = setting(5.0, "largest gradient norm; 0 for none", group=TRAINING)
    patience: int = setting(10, "stop after this many validations without a better score; 0 for never",
                            group=TRAINING)
    val_every: int = setting(0, "also validate every N steps (0: after each epoch only)", group=TRAINING)
    max_steps: int | None = setting(None, "stop after this many optimizer steps (the schedule still spans the epochs)",
                                    group=TRAINING)
    seed: int = setting(1, "seed of every random choice; CPU runs with the same seed give the same model",
                        group=TRAINING)
    gpu: str = setting("-1", "-1 for the CPU, 0 for the first GPU, 0,1 for several (one process each, via torchrun)",
                       group=HARDWARE)
    precision: str = setting("auto", "auto: bf16 autocast where the GPU or CPU computes bf16 natively "
                             "(AVX-512-bf16, AMX), else fp32", choices=("auto", "fp32", "bf16"), group=HARDWARE)
    workers: int | None = setting(None, "processes loading and distorting samples beside the trainer; 0: in its own "
                                  "process; empty: one per core it leaves, at most 4", group=HARDWARE)
    threads: int = setting(0, "torch CPU threads; 0: torch's choice, one per core", group=HARDWARE)
    tensorboard: bool = setting(False, "also log to OUTPUT/NAME/tensorboard/ (needs the tensorboard package)",
                                group=HARDWARE)


@dataclass
class TrainSettings(RunSettings):
    train_list: list[Path] = setting([], "list file(s) of training lines (path<TAB>text)", group=DATA)
    val_list: Path | None = setting(None, "list file of validation lines (they pick best_val/)", group=DATA)
    base_model: Path | None = setting(None, "model folder to fine-tune (a Loghi model folder is converted first)",
                                      group=MODEL)
    spec: str | None = setting(None, "VGSL spec or preset (small, recommended, kraken) to train from scratch",
                               group=MODEL)
    charset_mode: str = setting("union", "fine-tuning: union adds rows for new characters and keeps the trained "
                                "ones; keep drops lines with unknown characters; replace starts a new output layer",
                                choices=("union", "keep", "replace"), group=MODEL)
    freeze: str | None = setting(None, "parts of the base model kept fixed: conv, rnn or conv,rnn", group=MODEL)
    normalize: str = setting("NFC", "Unicode normalisation of the texts for a new model (a base model keeps its own)",
                             choices=("NFC", "NFD", "none"), group=MODEL)
    no_augment: bool = setting(False, "no augmentation at all", group=AUGMENTATION)
    aug_elastic: float = setting(Augment.elastic, "elastic distortion: smooth random displacement of the pixels",
                                 group=AUGMENTATION)
    aug_shear: float = setting(Augment.shear, "slant", group=AUGMENTATION)
    aug_width: float = setting(Augment.width, "stretch or squeeze horizontally (0.8 to 1.2)", group=AUGMENTATION)
    aug_blur: float = setting(Augment.blur, "Gaussian blur", group=AUGMENTATION)
    aug_crop: float = setting(Augment.crop, "move each border by up to 4 pixels", group=AUGMENTATION)
    aug_binarize: float = setting(Augment.binarize, "Otsu binarisation", group=AUGMENTATION)
    aug_invert: float = setting(Augment.invert, "negative image (only if your scans contain negatives)",
                                group=AUGMENTATION)
    # what a line recogniser's run says differently from any run's
    epochs: int = setting(50, "passes over the training lines", group=TRAINING)
    batch_size: int = setting(16, "lines per optimizer step", group=TRAINING)
    patience: int = setting(10, "stop after this many validations without a better CER; 0 for never",
                            group=TRAINING)
    workers: int | None = setting(None, "processes loading and distorting lines beside the trainer; 0: in its own "
                                  "process; empty: one per core it leaves, at most 4", group=HARDWARE)

    def augmentation(self) -> Augment:
        """The distortions these settings ask for."""
        if self.no_augment:
            return Augment.off()
        return Augment(elastic=self.aug_elastic, shear=self.aug_shear, width=self.aug_width, blur=self.aug_blur,
                       crop=self.aug_crop, binarize=self.aug_binarize, invert=self.aug_invert)
