#!/usr/bin/python3
"""What a Python backend does with wsmesh: mint a client token, send a user a
message with POST /send, and check the signature of an upstream webhook.
Copy the functions you need.

    /usr/bin/python3 backend.py          # mint a token for USER_ID, then send USER_ID a message
    /usr/bin/python3 backend.py mint     # print a token for USER_ID
    /usr/bin/python3 backend.py send     # POST /send to USER_ID, print the answer
    /usr/bin/python3 backend.py verify SECRET TIMESTAMP SIGNATURE BODYFILE   # exit 0 if valid

Needs PyJWT: Debian's python3-jwt (apt-get install python3-jwt; run Debian's
/usr/bin/python3), or pip install PyJWT. The rest is the standard library.

Environment: WSMESH_URL (default http://127.0.0.1:8080), WSMESH_API_KEY
(auth.api_keys), WSMESH_JWT_SECRET (auth.jwt_secret), USER_ID.
"""

import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request

import jwt  # PyJWT


def mint_token(jwt_secret: str, user: str, device: str, ttl_seconds: int = 3600) -> str:
    """A client token (HS256) for user on device; the client connects with
    ws://host:8080/ws?token=..."""
    now = int(time.time())
    claims = {
        "sub": user,
        "device": device,
        "iat": now,
        "exp": now + ttl_seconds,  # required: wsmesh refuses a token without exp
    }
    # auth.jwt_secret is used as the raw bytes of the string (UTF-8), NOT
    # base64-decoded, even when it looks like base64.
    return jwt.encode(claims, jwt_secret.encode("utf-8"), algorithm="HS256")


def send_to_user(base_url: str, api_key: str, user: str, data) -> dict:
    """POST /send data to every session of user; returns wsmesh's answer
    (id, delivered, offline, ..., results)."""
    req = urllib.request.Request(
        base_url + "/send",
        data=json.dumps({"users": [user], "data": data}).encode("utf-8"),
        headers={"Authorization": "Bearer " + api_key, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 4xx, 5xx: wsmesh says why in {"error": "..."}
        raise RuntimeError(f"POST /send: {e.code}: {e.read().decode('utf-8', 'replace').strip()}") from None


MAX_SKEW_SECONDS = 5 * 60  # how far Wsmesh-Timestamp may be from now


def verify_signature(secret: bytes, timestamp: str, signature: str, body: bytes, now=None) -> bool:
    """Checks an upstream webhook: signature is its Wsmesh-Signature header,
    timestamp its Wsmesh-Timestamp header (Unix seconds), body the raw request
    body bytes, read before any JSON decoding (Flask: request.get_data(),
    Django: request.body). The signature is
    "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body))."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > MAX_SKEW_SECONDS:
        return False  # a replay, or a wrong clock
    # upstream.secret: raw string bytes too (secret.encode("utf-8")).
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    expected = "v1=" + mac.hexdigest()
    return hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii"))  # constant time


def main(args) -> int:
    mode = args[0] if args else "all"
    if mode == "verify" and len(args) == 5:
        _, secret, timestamp, signature, body_file = args
        with open(body_file, "rb") as f:
            body = f.read()
        if not verify_signature(secret.encode("utf-8"), timestamp, signature, body):
            print("invalid signature", file=sys.stderr)
            return 1
        print("valid")
        return 0
    if mode not in ("all", "mint", "send") or len(args) > 1:
        print("usage: backend.py [mint | send | verify SECRET TIMESTAMP SIGNATURE BODYFILE]", file=sys.stderr)
        return 2

    base_url = os.environ.get("WSMESH_URL") or "http://127.0.0.1:8080"
    user = os.environ["USER_ID"]
    if mode != "send":
        print(mint_token(os.environ["WSMESH_JWT_SECRET"], user, "web"))
    if mode != "mint":
        answer = send_to_user(base_url, os.environ.get("WSMESH_API_KEY", ""), user, {"text": "hello from python"})
        print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
