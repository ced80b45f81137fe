"""How a command uses the machine: malloc keeps what a CPU run frees."""

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from loghi_ft.devices import keep_freed_memory

    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    kept = keep_freed_memory() if sys.argv[1] == "keep" else False
    before = resident_mb()
    block = np.ones(256 * 2**20, dtype=np.uint8)  # a 256 MiB activation, written
    del block
    print(kept, resident_mb() - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_blocks_stay_in_the_process_for_the_next_step():
    """Without it glibc returns a freed 256 MiB block to the kernel (the next one is faulted in again page by page);
    with it the block stays, for the next step to reuse."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True).stdout
        kept, grown = out.split()
        return kept == "True", float(grown)

    kept, grown = run("keep")
    assert kept and grown > 200
    kept, grown = run("default")
    assert not kept and grown < 50


@pytest.mark.parametrize("cores, requested, device, expected", [
    (2, None, "cpu", 0),     # the step needs both cores: lines load between steps
    (2, 1, "cpu", 1),        # as asked
    (2, None, "cuda", 1),    # a GPU step leaves the CPU to the loaders
    (8, None, "cpu", 4),     # more cores: worker_count's choice, at most 4
    (1, None, "cpu", 0),
])
def test_line_loaders_default_to_none_on_a_two_core_cpu(monkeypatch, cores, requested, device, expected):
    from loghi_ft.devices import line_loader_workers
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert line_loader_workers(requested, device) == expected
