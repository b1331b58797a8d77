"""The long fuzzing campaign for layer application (issue 13): the same property as the CI
test (tests/zfsimage/test_fuzz.py), random rather than derandomised, with many more examples.

    python -m bench.image_fuzz [--examples N]

Failing cases print as Hypothesis reproductions; turn each into a named corpus entry in
tests/zfsimage/test_hostile.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=5000)
    args = ap.parse_args()
    env = {**os.environ, "XC_FUZZ_EXAMPLES": str(args.examples), "XC_FUZZ_CAMPAIGN": "1"}
    t = time.monotonic()
    cp = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "--timeout", "0", "tests/zfsimage/test_fuzz.py"], env=env, check=False)
    print(f"{args.examples} examples per property in {time.monotonic() - t:.0f} s, "
          f"exit status {cp.returncode}")
    sys.exit(cp.returncode)


if __name__ == "__main__":
    main()
