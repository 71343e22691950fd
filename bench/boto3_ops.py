"""One boto3 transfer, timed in-process: the SDK's own `upload_file` / `download_file`.

    python bench/boto3_ops.py --endpoint URL --bucket B upload --src FILE --key KEY
    python bench/boto3_ops.py --endpoint URL --bucket B download --key KEY --dst FILE

Run by seaweedfs_bench.py, a fresh process per operation, with the keys in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY. Only the transfer call is timed (the client is made before it, the import
and interpreter start-up are not counted): the strictest figure to hold artifactd's whole CLI
process against. boto3's defaults throughout (TransferConfig: 8 MiB parts, 10 threads).
"""

from __future__ import annotations

import argparse
import os
import time

import boto3
from benchutil import emit
from botocore.config import Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("op", choices=("upload", "download"))
    parser.add_argument("--key", required=True)
    parser.add_argument("--src")
    parser.add_argument("--dst")
    args = parser.parse_args()
    client = boto3.client(
        "s3", endpoint_url=args.endpoint, region_name=args.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )  # fmt: skip
    started = time.perf_counter()
    if args.op == "upload":
        client.upload_file(args.src, args.bucket, args.key)
        local = args.src
    else:
        client.download_file(args.bucket, args.key, args.dst)
        local = args.dst
    seconds = time.perf_counter() - started
    emit(f"boto3_{args.op}", seconds, os.path.getsize(local), 1)


if __name__ == "__main__":
    main()
