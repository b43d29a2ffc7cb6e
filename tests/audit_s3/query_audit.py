#!/usr/bin/env python3
"""Asks the audit export in S3 a question, with DuckDB.

The export (issue 25) is one object per batch of records:

    s3://BUCKET/PREFIX/GATEWAY/dt=YYYY-MM-DD/<first seq>-<last seq>.jsonl.gz

gzip of JSON lines, one audit record a line (seq, time, kind, actor, source,
target, detail, prev_hash, hash), seq zero-padded to 20 digits so names sort.

    query_audit.py --bucket B --prefix audit --gateway gw1 reached --host 10.0.3.140 [--date 2026-12-05]

prints JSON: which users reached HOST on DATE (a UTC day, today by default),
through the jump host (`ssh.session.start` whose detail.resolved is HOST:port)
or through the VPN (`vpn.flow` whose detail.dst is HOST).

DuckDB reads what S3 lists: the current version of each key. It answers
questions; it does not verify the export. Object Lock keeps every first
version, but an overwrite or a delete marker changes what is current, so
whether the log is whole and unaltered is for the verifier, which reads the
first version of each key and checks the hash chain.

Nothing is downloaded at run time: httpfs is loaded by file path from the
`duckdb-extension-httpfs` wheel (pinned to the same version as `duckdb`), with
extension autoinstall and autoload off, unsigned extensions refused, and the
extension directory an empty temp dir of this run.

Credentials: with --endpoint (moto, or another S3-compatible store) from
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else dummy keys; without it, boto3's
credential chain (environment, ~/.aws, instance profile), handed to DuckDB as
a secret of this connection only.
"""

import argparse
import datetime
import importlib.util
import json
import os
import sys
import tempfile
import urllib.parse

import duckdb

# Kinds that show a user reaching a host, and where the host is in each.
SSH_KIND = "ssh.session.start"
VPN_KIND = "vpn.flow"

# The record's columns, typed here rather than sniffed: a sniffed `detail`
# becomes a STRUCT of whatever keys the sampled lines had.
RECORD_COLUMNS = {
    "seq": "UBIGINT",
    "time": "VARCHAR",
    "kind": "VARCHAR",
    "actor": "VARCHAR",
    "source": "VARCHAR",
    "target": "VARCHAR",
    "detail": "JSON",
    "prev_hash": "VARCHAR",
    "hash": "VARCHAR",
}


class QueryError(Exception):
    """A question that cannot be answered (no extension, no objects, bad input)."""


def httpfs_extension_path():
    """The httpfs extension file the duckdb-extension-httpfs wheel ships.

    The wheel installs it at
    site-packages/duckdb_extension_httpfs/extensions/v<duckdb version>/httpfs.duckdb_extension;
    GATEHOUSE_DUCKDB_HTTPFS names another file.
    """
    override = os.environ.get("GATEHOUSE_DUCKDB_HTTPFS")
    if override:
        path = override
    else:
        spec = importlib.util.find_spec("duckdb_extension_httpfs")
        if spec is None or not spec.submodule_search_locations:
            raise QueryError(
                "the duckdb-extension-httpfs package is not installed "
                f"(pip install duckdb-extension-httpfs=={duckdb.__version__})"
            )
        path = os.path.join(
            spec.submodule_search_locations[0],
            "extensions",
            f"v{duckdb.__version__}",
            "httpfs.duckdb_extension",
        )
    if not os.path.isfile(path):
        raise QueryError(
            f"{path}: no httpfs extension for duckdb {duckdb.__version__} "
            "(duckdb and duckdb-extension-httpfs must have the same version)"
        )
    return path


def connect(extension_dir, load_httpfs=True):
    """An in-memory DuckDB that installs and autoloads nothing.

    `extension_dir` should be an empty directory: DuckDB would install
    extensions there, so it staying empty shows that nothing was fetched.
    """
    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_unsigned_extensions": False,
            "allow_community_extensions": False,
            "extension_directory": extension_dir,
        }
    )
    if load_httpfs:
        # The signature check stays on: the file must be signed by DuckDB.
        con.execute(f"LOAD {sql_string(httpfs_extension_path())}")
    return con


def configure_s3(con, region, endpoint=None, credentials=None):
    """Gives `con` an S3 secret: a custom endpoint (moto) or AWS itself.

    `credentials` is (key id, secret, session token or None).
    """
    key_id, secret, token = credentials
    options = [
        "TYPE s3",
        "PROVIDER config",
        f"KEY_ID {sql_string(key_id)}",
        f"SECRET {sql_string(secret)}",
        f"REGION {sql_string(region)}",
    ]
    if token:
        options.append(f"SESSION_TOKEN {sql_string(token)}")
    if endpoint:
        url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if not url.hostname:
            raise QueryError(f"--endpoint {endpoint}: no host")
        host = url.hostname if url.port is None else f"{url.hostname}:{url.port}"
        options += [
            f"ENDPOINT {sql_string(host)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if url.scheme == 'https' else 'false'}",
        ]
    con.execute(f"CREATE OR REPLACE SECRET audit_s3 ({', '.join(options)})")


def export_glob(bucket, prefix, gateway):
    """Every object of one gateway's export, all days."""
    parts = [p.strip("/") for p in (prefix, gateway) if p.strip("/")]
    return f"s3://{bucket}/{'/'.join(parts)}/dt=*/*.jsonl.gz"


def users_who_reached(con, glob, host, day):
    """Users who reached `host` on the UTC day `day` (a datetime.date).

    One entry a user: how (ssh, vpn), how many records, first and last time.
    A record counts by its own time; partitions one day either side are read
    too, so a batch that crosses midnight still counts.
    """
    # The host of `resolved` without its port: 10.0.3.140:22, [fd00::1]:22.
    # (json_extract_string, not ->>: `detail->>'dst' = ?` parses as
    # detail->>('dst' = ?).)
    ssh_host = r"regexp_extract(json_extract_string(detail, '$.resolved'), '^\[?(.*?)\]?:[0-9]+$', 1)"
    sql = f"""
        WITH records AS (
            SELECT actor, kind, time, detail
            FROM read_json(?, format = 'newline_delimited', compression = 'gzip',
                           hive_partitioning = true, hive_types = {{'dt': 'DATE'}},
                           columns = {json_struct(RECORD_COLUMNS)})
            WHERE dt BETWEEN ?::DATE - 1 AND ?::DATE + 1
        ), reached AS (
            SELECT actor, CASE kind WHEN '{SSH_KIND}' THEN 'ssh' ELSE 'vpn' END AS via, time
            FROM records
            WHERE CAST(CAST(time AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS DATE) = ?::DATE
              AND ((kind = '{SSH_KIND}' AND {ssh_host} = ?)
                OR (kind = '{VPN_KIND}' AND json_extract_string(detail, '$.dst') = ?))
        )
        SELECT actor, list(DISTINCT via ORDER BY via), count(*), min(time), max(time)
        FROM reached GROUP BY actor ORDER BY actor
    """
    con.execute("SET TimeZone = 'UTC'")
    try:
        rows = con.execute(sql, [glob, day, day, day, host, host]).fetchall()
    except duckdb.IOException as e:
        if "No files found" in str(e):
            raise QueryError(f"no audit objects under {glob}") from e
        raise
    return [
        {"user": user, "via": via, "records": n, "first": first, "last": last}
        for user, via, n, first, last in rows
    ]


def sql_string(value):
    return "'" + str(value).replace("'", "''") + "'"


def json_struct(columns):
    return "{" + ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in columns.items()) + "}"


def resolve_credentials(endpoint):
    env = os.environ
    if endpoint:
        return (
            env.get("AWS_ACCESS_KEY_ID", "testing"),
            env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            env.get("AWS_SESSION_TOKEN"),
        )
    import boto3  # only for AWS itself: its credential chain

    creds = boto3.Session().get_credentials()
    if creds is None:
        raise QueryError("no AWS credentials (environment, ~/.aws or an instance profile)")
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="S3 endpoint URL, e.g. http://127.0.0.1:5000 (moto); AWS if absent")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="", help="the export's key prefix (audit.s3 prefix)")
    parser.add_argument("--gateway", required=True, help="the gateway's folder under the prefix")
    questions = parser.add_subparsers(dest="question", required=True)
    reached = questions.add_parser("reached", help="which users reached HOST on DATE")
    reached.add_argument("--host", required=True, help="an address, as in detail.resolved / detail.dst")
    reached.add_argument("--date", help="YYYY-MM-DD, a UTC day; today (UTC) if absent")
    args = parser.parse_args(argv)

    try:
        day = (
            datetime.date.fromisoformat(args.date)
            if args.date
            else datetime.datetime.now(datetime.timezone.utc).date()
        )
    except ValueError:
        parser.error(f"--date {args.date}: not YYYY-MM-DD")

    glob = export_glob(args.bucket, args.prefix, args.gateway)
    try:
        with tempfile.TemporaryDirectory(prefix="gatehouse-duckdb-ext-") as ext_dir:
            con = connect(ext_dir)
            configure_s3(con, args.region, args.endpoint, resolve_credentials(args.endpoint))
            users = users_who_reached(con, glob, args.host, day)
            con.close()
    except (QueryError, duckdb.Error) as e:
        print(f"query_audit: {e}", file=sys.stderr)
        return 1
    json.dump(
        {"question": "reached", "host": args.host, "date": day.isoformat(), "objects": glob, "users": users},
        sys.stdout,
        indent=2,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
