"""Verifies AWS Signature Version 4 signatures the way the receiving side
would, with botocore (the AWS SDK for Python's core): for each request an
upstream received through authproxy, botocore signs the same request
again (same method, path, query, signed headers, body, time and
credentials) and the two Authorization headers must be equal.

Input on stdin, one JSON object per request:
  {"method", "url" (http://host/path?query exactly as received), "headers":
   [[name, value], ...] (every header received), "body_hex", "access_key",
   "secret_key", "token" (or null), "region", "service", "s3" (bool),
   "unsigned" (bool: the body was sent as UNSIGNED-PAYLOAD)}
Output: one line per request, "ok" or "FAIL <why>"; exit 1 on any FAIL.
"""

import datetime
import hashlib
import json
import sys
import types

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def check(req):
    headers = req["headers"]
    by_name = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    auth = by_name.get("authorization", [None])[0]
    if not auth or not auth.startswith("AWS4-HMAC-SHA256 "):
        return f"no SigV4 Authorization header: {auth!r}"
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    signed = parts["SignedHeaders"].split(";")
    scope = parts["Credential"].split("/")
    if scope[0] != req["access_key"] or scope[2:] != [req["region"], req["service"], "aws4_request"]:
        return f"credential scope {parts['Credential']!r}"
    # What AWS requires signed: host and every x-amz-* header sent.
    for name in by_name:
        if (name == "host" or name.startswith("x-amz-")) and name not in signed:
            return f"{name} is sent but not signed ({parts['SignedHeaders']})"
    body = bytes.fromhex(req["body_hex"])
    payload = by_name.get("x-amz-content-sha256", [None])[0]
    expected = "UNSIGNED-PAYLOAD" if req["unsigned"] else hashlib.sha256(body).hexdigest()
    if payload != expected:
        return f"x-amz-content-sha256 {payload!r}, the body received hashes to {expected!r}"
    if (by_name.get("x-amz-security-token", [None])[0]) != req["token"]:
        return "x-amz-security-token is not the session token"

    amz_date = by_name["x-amz-date"][0]
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc
    )
    botocore.auth.get_current_datetime = lambda: when

    request = AWSRequest(method=req["method"], url=req["url"], data=body)
    for name, value in headers:
        if name.lower() in signed:
            # HTTPHeaders (an email.message.Message) appends: repeated
            # headers stay repeated, in order.
            request.headers[name] = value
    creds = Credentials(req["access_key"], req["secret_key"], req["token"])
    if req["s3"]:
        signer = botocore.auth.S3SigV4Auth(creds, req["service"], req["region"])
        request.context["client_config"] = types.SimpleNamespace(
            s3={"payload_signing_enabled": not req["unsigned"]}
        )
    else:
        signer = botocore.auth.SigV4Auth(creds, req["service"], req["region"])
        if req["unsigned"]:
            request.context["payload_signing_enabled"] = False
    signer.add_auth(request)
    theirs = request.headers["Authorization"]
    if theirs != auth:
        canonical = signer.canonical_request(request)
        return f"botocore signs {theirs!r}, the request has {auth!r}; botocore's canonical request:\n{canonical}"
    return None


def main():
    failed = False
    for line in sys.stdin:
        if not line.strip():
            continue
        problem = check(json.loads(line))
        if problem:
            failed = True
            print("FAIL " + problem.replace("\n", "\n     "))
        else:
            print("ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
