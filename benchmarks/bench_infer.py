"""Lines per second and peak memory of `loghi-ft infer` against `kraken ocr`, same pages, same-size model, same run.

    python benchmarks/bench_infer.py [--model DIR] [--split test] [--repeats 1] [--skip-kraken] [--kraken-batch 1]

End to end for both: start the program, parse the PAGE XML, cut the lines, recognise, write PAGE XML.
Pages: the timeus-1858 pages of one split in splits.tsv (default: the 14 test pages, 308 lines).
Model: --model, else the newest models/*/best_val in the repository, else an untrained model of the
`small` preset (recognition speed does not depend on the weights). kraken gets the same network, our
spec translated to kraken's VGSL, built by its own builder (untrained: speed does not depend on it).
Both leave one core per line-cutting process: loghi-ft its defaults (torch threads = cores - workers),
kraken its default 2 line workers and --threads cores - 2 (at least 1, kraken's default).
Peak memory and CPU time are those of the command's whole process tree (bench_prepare.timed). On a
shared machine the wall-clock rate moves with the neighbours' load; lines per CPU-second much less.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import ROOT, TIMEUS, VENV, install_kraken, timed  # noqa: E402

# our VGSL tokens in kraken's spelling; Bn has no kraken counterpart (per-channel scaling: not what costs time)
KRAKEN_TOKENS = [(r"None,None,(\d+),(\d+)", r"1,\1,0,\2"), (r"C([a-z])(\d+),(\d+),(\d+)", r"C\1\2,\3,\4"),
                 (r"Mp(\d+),(\d+),(\d+),(\d+)", r"Mp\1,\2,\3,\4"), (r"Rc3", "S1(1x0)1,3"),
                 (r"Bl(\d+)", r"Lbx\1"), (r"D(\d+)", None), (r"Bn", "")]
BUILD_KRAKEN_MODEL = """
import json, sys, warnings
warnings.simplefilter("ignore")
from kraken.lib.vgsl import TorchVGSLModel
from kraken.lib.codec import PytorchCodec
charset = json.loads(open(sys.argv[1], encoding="utf-8").read())
m = TorchVGSLModel(vgsl=sys.argv[2] + f" O1c{len(charset) + 1}]")
m.add_codec(PytorchCodec(charset))
m.init_weights()
m.user_metadata["model_type"] = ["recognition"]
m.save_model(sys.argv[3])
print(sum(p.numel() for p in m.nn.parameters()))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="loghi-ft model folder (default: see above)")
    parser.add_argument("--split", default="test", help="timeus-1858 split to run on (default: test)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each tool; the median is reported")
    parser.add_argument("--skip-kraken", action="store_true", help="time loghi-ft only")
    parser.add_argument("--kraken-batch", type=int, default=1, help="kraken ocr -B (default: 1, kraken's default)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further options for loghi-ft infer")
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        tmp = Path(tmp)
        pages = link_pages(tmp / "pages", args.split)
        model, how = (args.model, "given") if args.model else find_or_build_model(tmp)
        info = json.loads(((model / "model.json") if (model / "model.json").exists()
                           else next(model.glob("*/model.json"))).read_text(encoding="utf-8"))
        params = parameter_count(model)
        print(f"{len(pages)} pages ({args.split} split of timeus-1858), {cores} cores; "
              f"loghi-ft model {model} ({how}, {params / 1e6:.2f} M parameters)")
        devices = ["-1"] + (["0"] if gpu_present() else [])
        ours = {}
        for gpu in devices:
            runs = []
            for i in range(args.repeats):
                out = tmp / f"ours-{gpu}-{i}"
                cmd = [sys.executable, "-m", "loghi_ft", "infer", "--model", str(model), str(tmp / "pages"),
                       "--output", str(out), "--gpu", gpu] + args.extra
                seconds, cpu, peak = timed(cmd)
                lines = count_lines(out.glob("*.xml"))
                runs.append((lines / seconds, peak, lines / max(cpu, 1e-9)))
                print(f"loghi-ft infer ({'CPU' if gpu == '-1' else 'GPU ' + gpu}): {lines} lines in {seconds:.1f} s "
                      f"= {lines / seconds:.1f} lines/s ({lines / max(cpu, 1e-9):.1f} lines per CPU-second), "
                      f"peak memory {peak / 2**20:.0f} MiB")
            ours[gpu] = summarise(runs)
        if args.skip_kraken:
            return 0

        install_kraken()
        kraken_model = tmp / "kraken.mlmodel"
        charset_file = tmp / "charset.json"
        charset_file.write_text(json.dumps(info["charset"]), encoding="utf-8")
        spec = kraken_spec(info["spec"])
        built = subprocess.run([str(VENV / "bin" / "python"), "-c", BUILD_KRAKEN_MODEL, str(charset_file), spec,
                                str(kraken_model)], capture_output=True, text=True, check=True)
        print(f"kraken model: untrained, {int(built.stdout.split()[-1]) / 1e6:.2f} M parameters, {spec} O1c...]")
        theirs = {}
        for gpu in devices:
            runs = []
            for i in range(args.repeats):
                out = tmp / f"kraken-{gpu}-{i}"
                out.mkdir()
                # explicit input/output pairs: a glob would also pick up earlier runs' output
                pairs = [word for page in pages for word in ("-i", str(page), str(out / page.name))]
                cmd = [str(VENV / "bin" / "kraken"), "--threads", str(max(1, cores - 2)), "-d", "cpu" if gpu == "-1" else f"cuda:{gpu}",
                       "-f", "page", *pairs, "-x", "ocr", "-m", str(kraken_model), "-B", str(args.kraken_batch)]
                seconds, cpu, peak = timed(cmd)
                lines = count_lines(out.glob("*.xml"))
                runs.append((lines / seconds, peak, lines / max(cpu, 1e-9)))
                print(f"kraken ocr ({'CPU' if gpu == '-1' else 'GPU ' + gpu}, -B {args.kraken_batch}): {lines} lines in "
                      f"{seconds:.1f} s = {lines / seconds:.1f} lines/s ({lines / max(cpu, 1e-9):.1f} lines per CPU-second), "
                      f"peak memory {peak / 2**20:.0f} MiB")
            theirs[gpu] = summarise(runs)
        for gpu in devices:
            (a, pa, ca), (b, pb, cb) = ours[gpu], theirs[gpu]
            print(f"{'CPU' if gpu == '-1' else 'GPU'} medians: lines/s loghi-ft {a:.1f}, kraken {b:.1f}, ratio {a / b:.1f}x; "
                  f"lines per CPU-second loghi-ft {ca:.1f}, kraken {cb:.1f}, ratio {ca / cb:.1f}x; "
                  f"peak memory loghi-ft {pa / 2**20:.0f} MiB, kraken {pb / 2**20:.0f} MiB")
    return 0


def summarise(runs: list[tuple[float, int, float]]) -> tuple[float, int, float]:
    """Median lines/s, largest peak memory, median lines per CPU-second."""
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs), statistics.median(r[2] for r in runs)


def kraken_spec(spec: str) -> str:
    """Our model's VGSL (without its output layer) in kraken's spelling, so both tools run the same network."""
    out = []
    for token in spec.split():
        if token.startswith("O"):
            continue
        for pattern, replacement in KRAKEN_TOKENS:
            m = re.fullmatch(pattern, token)
            if m:
                # kraken writes dropout as a probability: D20 is Do0.2
                word = f"Do{int(m.group(1)) / 100:g}" if replacement is None else m.expand(replacement)
                if word:
                    out.append(word)
                break
        else:
            sys.exit(f"no kraken counterpart known for VGSL token {token!r} of {spec!r}")
    return "[" + " ".join(out)


def link_pages(folder: Path, split: str) -> list[Path]:
    """Links to the split's page XML and images, in a folder of their own."""
    folder.mkdir(parents=True)
    rows = [line.split("\t") for line in (TIMEUS / "splits.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    pages = []
    for xml, image, which, *_ in rows:
        if which == split:
            for name in (xml, image):
                (folder / name).symlink_to(TIMEUS / name)
            pages.append(folder / xml)
    if not pages:
        sys.exit(f"no pages of split '{split}' in {TIMEUS / 'splits.tsv'}")
    return pages


def find_or_build_model(tmp: Path) -> tuple[Path, str]:
    """The newest trained model under models/, else an untrained `small` model over timeus' characters."""
    trained = sorted(ROOT.glob("models/**/best_val/model.safetensors"), key=lambda p: p.stat().st_mtime)
    if trained:
        return trained[-1].parent, "trained, from models/"
    from loghi_ft.model.folder import ModelInfo, save_model
    from loghi_ft.model.vgsl import build_model, presets
    from loghi_ft.pages.documents import find_pages, read_page
    charset = sorted({c for p in find_pages([TIMEUS]) for line in read_page(p).lines for c in line.text})
    net = build_model(presets()["small"], len(charset) + 1)
    folder = tmp / "small-untrained"
    save_model(net, ModelInfo(spec=net.spec, height=net.height, channels=net.channels, charset=charset), folder)
    return folder, "untrained `small` preset"


def parameter_count(model: Path) -> int:
    from loghi_ft.model.folder import load_model
    net, _ = load_model(model)
    return sum(p.numel() for p in net.parameters())


def count_lines(xmls) -> int:
    """TextLines that got a TextEquiv in the written pages."""
    from lxml import etree
    total = 0
    for xml in xmls:
        root = etree.parse(str(xml)).getroot()
        total += len(root.xpath("//*[local-name()='TextLine'][*[local-name()='TextEquiv']]"))
    return total


def gpu_present() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
