#!/usr/bin/env python3
"""alice's laptop in the demo (packaging/demo.sh): what she does in the portal,
through its JSON API, with nothing but the Python standard library and `wg`.

    demo-laptop.py ENROLL_URL FINGERPRINT PASSWORD DEVICE OUT_CONF

1. Checks that the portal's certificate has the SHA-256 fingerprint the admin
   sees in `accessctl status` (the demo's certificate is self-signed), and
   talks only to that certificate from then on.
2. Opens the one-time enrollment link, sets a password, and enrolls TOTP the
   way an authenticator app would: it computes a current code (RFC 6238) from
   the secret the portal offers; the portal saves the secret only once a code
   verifies. Enrolling logs her in, which opens her VPN session.
3. Makes the device's WireGuard key pair itself (`wg genkey`), sends only the
   public key, and writes the wg-quick file with the private key, which never
   leaves the laptop.

Prints what it does; exits non-zero with the portal's answer when a step is
refused.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse


def totp_code(secret_b32: str, now: float) -> str:
    """The 6-digit SHA-1 TOTP code of a base32 secret, 30-second steps."""
    padded = secret_b32 + "=" * (-len(secret_b32) % 8)
    key = base64.b32decode(padded, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", int(now) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


class Portal:
    """HTTPS to one host, trusting exactly the certificate it was shown once
    its fingerprint matched; keeps the session cookie and CSRF token."""

    def __init__(self, host: str, port: int, fingerprint: str):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # pinned below, by fingerprint
        self.conn = http.client.HTTPSConnection(host, port, context=context, timeout=20)
        self.conn.connect()
        der = self.conn.sock.getpeercert(binary_form=True)
        seen = "SHA256:" + hashlib.sha256(der).hexdigest()
        if seen != fingerprint:
            sys.exit(f"the portal's certificate is {seen}, not {fingerprint}: not talking to it")
        print(f"  portal certificate {seen} matches accessctl status")
        self.cookie = None
        self.csrf = None

    def call(self, method: str, path: str, body=None):
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        data = json.dumps(body) if body is not None else None
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        if response.status != 200:
            sys.exit(f"{method} {path} was refused ({response.status}): {text}")
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return json.loads(text) if text else None


def main() -> None:
    enroll_url, fingerprint, password, device, out_conf = sys.argv[1:6]
    url = urllib.parse.urlsplit(enroll_url)
    portal = Portal(url.hostname, url.port or 443, fingerprint)

    offer = portal.call("GET", "/api/v1" + url.path)
    print(f"  enrollment for {offer['user']}: TOTP secret offered (the page shows it as a QR code)")
    code = totp_code(offer["totp_secret"], time.time())
    print("  her authenticator app shows a code; she types it in with a new password")
    answer = portal.call("POST", "/api/v1" + url.path, {
        "password": password,
        "totp_secret": offer["totp_secret"],
        "totp_code": code,
    })
    portal.csrf = answer["csrf_token"]
    whoami = portal.call("GET", "/api/v1/whoami")
    print(f"  enrolled and logged in as {whoami['user']}: groups {', '.join(whoami['groups'])}, "
          f"subnets {', '.join(whoami['subnets'])}; VPN access until {whoami['vpn_access_until']}")

    private_key = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public_key = subprocess.run(["wg", "pubkey"], input=private_key, capture_output=True,
                                text=True, check=True).stdout.strip()
    print(f"  the laptop made its key pair; it sends only the public key {public_key}")
    cfg = portal.call("POST", "/api/v1/devices", {"name": device, "public_key": public_key})
    allowed = [net for net in cfg["allowed_ips"] if not net.endswith("/0")]
    lines = [
        f"# gatehouse device config for {cfg['device']['user']}/{cfg['device']['name']}",
        "[Interface]",
        f"PrivateKey = {private_key}",
        f"Address = {cfg['interface_address']}",
        f"MTU = {cfg['mtu']}",
        "",
        "[Peer]",
        f"PublicKey = {cfg['gateway_public_key']}",
        f"Endpoint = {cfg['endpoint']}",
        f"AllowedIPs = {', '.join(allowed)}",
    ]
    if cfg["persistent_keepalive"]:
        lines.append(f"PersistentKeepalive = {cfg['persistent_keepalive']}")
    with open(out_conf, "w", encoding="ascii", opener=lambda path, flags: os.open(path, flags, 0o600)) as out:
        out.write("\n".join(lines) + "\n")
    print(f"  device {device} registered; wg-quick file written to {out_conf} (mode 0600)")


if __name__ == "__main__":
    main()
