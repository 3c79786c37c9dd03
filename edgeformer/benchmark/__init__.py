"""Benchmarking, in one home. Importing the package loads nothing; each module says what it needs.

On devices (onnxruntime and numpy only, never torch):
    options       the ONE declaration: Settings, Limits and their command-line options (stdlib)
    settings      argparse options from it, its JSON form for worker processes, ``resolve``
    runner        the device runner: one bundle's latency, generation and limits -> a run
    device        its command line, ``python -m edgeformer.runtime.bench``
    loops, timing the generation loops and inputs; progress and the clock
    limits        the machine's MatMul peak and weight bandwidth
    stats, report, output, plots   statistics and the machine; reports, rows, ratios, merging; table and files
    harness       the one process harness: ``python -P`` workers, JSON requests, timeouts
    worker        the worker process (``python -P -m edgeformer.benchmark.worker``)

On the host (``edgeformer bench``):
    variants      what to measure: bundles, a card's exports (cached), torch eager
    orchestrator  variants round-robin, each in worker processes; ``bench`` is the command
    torch_worker  the torch eager variant (torch; imported in a torch job's process only)
"""
