"""One artifactd client operation per process, timed from inside (run with artifactd's venv).

    python artifactd_ops.py --target 127.0.0.1:PORT upload --src big.bin --path r0/large
    python artifactd_ops.py --target ... download --path r0/large/big.bin --dst OUT \\
        --expect-files 1 --expect-bytes 1073741824

Only the client call is timed, not the interpreter start-up and imports, so the figure compares
with `mlflow_ops.py`, which excludes MLflow's much slower import the same way. The channel is
created before the clock starts but connects lazily, so connection set-up is inside the timing,
as MLflow's HTTP connection is. `--profile FILE` writes a cProfile of just the operation.
"""

from __future__ import annotations

import argparse
import cProfile
import time
from collections.abc import Callable

from benchutil import check_download, emit, tree_stats

from artifactd.client import ArtifactClient


def _timed(operation: Callable[[], object], profile: str | None) -> float:
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.runcall(operation)
    else:
        operation()
    elapsed = time.perf_counter() - start
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the artifactd server")
    parser.add_argument("--profile", help="write a cProfile of the operation to this file")
    parser.add_argument("op", choices=["upload", "upload-dir", "download", "download-dir"])
    parser.add_argument("--src", help="local file (upload) or directory (upload-dir)")
    parser.add_argument("--path", required=True, help="artifact path on the server")
    parser.add_argument("--dst", help="local directory to download into")
    parser.add_argument("--expect-files", type=int, default=0)
    parser.add_argument("--expect-bytes", type=int, default=0)
    args = parser.parse_args()

    with ArtifactClient(args.target) as client:
        if args.op == "upload":
            files, nbytes = tree_stats(args.src)
            seconds = _timed(lambda: client.log_artifact(args.src, args.path), args.profile)
        elif args.op == "upload-dir":
            files, nbytes = tree_stats(args.src)
            seconds = _timed(lambda: client.log_artifacts(args.src, args.path), args.profile)
        else:
            local: list[str] = []
            seconds = _timed(
                lambda: local.append(client.download_artifacts(args.path, args.dst)),
                args.profile,
            )
            files, nbytes = check_download(local[0], args.expect_files, args.expect_bytes)
    emit(f"artifactd_{args.op.replace('-', '_')}", seconds, nbytes, files)


if __name__ == "__main__":
    main()
