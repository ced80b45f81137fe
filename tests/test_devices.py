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
