"""``python -m edgeformer.runtime.bench``: the device runner's command line, which lives in
``edgeformer.benchmark.device`` (benchmarking's one home); this name stays for the README, the docs
and scripts on devices. onnxruntime and numpy only."""

import sys

from edgeformer.benchmark.device import main

if __name__ == "__main__":
    sys.exit(main())
