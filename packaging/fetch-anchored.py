#!/usr/bin/env python3
"""Downloads a gateway's anchored audit export from S3, for
`accessctl audit verify --anchored DIR`.

    fetch-anchored.py --bucket B [--prefix P] --gateway G DIR [--endpoint URL] [--region R]

Writes the FIRST version of every object under s3://B/P/G/ to DIR (same key
layout). Object Lock keeps that version as accessd wrote it; a later version
of the same key (a plain PutObject by someone else) or a delete marker
changes only what S3 lists as current, so `aws s3 sync`, which copies the
current versions, could hand the verifier a replaced object. Keys with more
than one version, or hidden by a delete marker, are named on stderr: either
is a write the gateway's own IAM statements do not allow.

Needs boto3; credentials as the AWS CLI takes them (environment, ~/.aws, an
instance profile). Exits 1 when there is no object, 0 otherwise.
"""

import argparse
import os
import sys

import boto3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="gatehouse-audit", help="audit.s3.prefix")
    parser.add_argument("--gateway", required=True, help="gateway.name")
    parser.add_argument("--endpoint", help="an S3-compatible endpoint (moto in the tests)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION"))
    parser.add_argument("dir")
    args = parser.parse_args()

    s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name=args.region)
    prefix = "/".join(p for p in (args.prefix.strip("/"), args.gateway) if p) + "/"
    versions, markers = {}, set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=args.bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            versions.setdefault(v["Key"], []).append(v)
        for m in page.get("DeleteMarkers", []):
            markers.add(m["Key"])
    if not versions:
        print(f"no audit objects under s3://{args.bucket}/{prefix}", file=sys.stderr)
        return 1
    for key in sorted(versions):
        # S3 lists a key's versions newest first; the last is the one the
        # gateway wrote. (LastModified has whole seconds: it cannot order
        # two writes in one second.)
        mine = versions[key]
        if len(mine) > 1:
            print(f"warning: {key} has {len(mine)} versions; using the first", file=sys.stderr)
        if key in markers:
            print(f"warning: {key} is hidden by a delete marker; using its first version", file=sys.stderr)
        body = s3.get_object(Bucket=args.bucket, Key=key, VersionId=mine[-1]["VersionId"])["Body"].read()
        path = os.path.join(args.dir, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(body)
    print(f"{len(versions)} objects written under {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
