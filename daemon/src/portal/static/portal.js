// gatehouse portal: the devices page. Makes a WireGuard key pair IN THE
// BROWSER (WebCrypto X25519), sends only the public key to the gateway, and
// builds the wg-quick file and its QR code here. The private key is never
// sent. Browsers without X25519 fall back to a key pair the gateway makes,
// returns once and does not keep; the page says so.
"use strict";

(function () {
  const form = document.getElementById("add-device");
  if (!form) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("add-status");
  const result = document.getElementById("new-device");

  function b64(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }

  function b64urlToB64(text) {
    let s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return s;
  }

  // Returns {publicKey, privateKey} (base64), or null when the browser
  // cannot make X25519 keys.
  async function makeKeyPair() {
    try {
      const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
      const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
      const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
      return { publicKey: b64(pub), privateKey: b64urlToB64(jwk.d) };
    } catch (e) {
      return null;
    }
  }

  // The same file config/src/wg_quick.rs renders.
  function wgQuick(cfg, privateKey) {
    const lines = [
      "# gatehouse device config for " + cfg.device.user + "/" + cfg.device.name,
      "# Only the subnets below go through the tunnel (split tunnel); all other traffic uses this device's usual connection.",
      "[Interface]",
      "PrivateKey = " + privateKey,
      "Address = " + cfg.interface_address,
      "MTU = " + cfg.mtu,
      "",
      "[Peer]",
      "PublicKey = " + cfg.gateway_public_key,
      "Endpoint = " + cfg.endpoint,
    ];
    const allowed = cfg.allowed_ips.filter((s) => !/\/0$/.test(s));
    if (allowed.length) lines.push("AllowedIPs = " + allowed.join(", "));
    else lines.push("# No AllowedIPs: this user's groups reach no subnet yet.");
    if (cfg.persistent_keepalive > 0) lines.push("PersistentKeepalive = " + cfg.persistent_keepalive);
    return lines.join("\n") + "\n";
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.message || "The gateway refused: " + response.status);
    return answer;
  }

  function show(cfg, privateKey, madeByGateway) {
    const text = wgQuick(cfg, privateKey);
    const name = cfg.device.name;
    result.hidden = false;
    document.getElementById("new-device-name").textContent = name + " (" + cfg.device.address + ")";
    document.getElementById("gateway-keyed").hidden = !madeByGateway;
    const link = document.getElementById("conf-download");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    link.download = name + ".conf";
    const qr = qrcode(0, "L");
    qr.addData(text);
    qr.make();
    const img = document.getElementById("conf-qr");
    img.src = qr.createDataURL(4, 8);
    img.alt = "QR code of the WireGuard config for " + name;
    document.getElementById("conf-text").textContent = text;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("device-name").value.trim();
    status.textContent = "Making a key pair in this browser…";
    try {
      const pair = await makeKeyPair();
      if (pair) {
        const cfg = await post("/api/v1/devices", { name: name, public_key: pair.publicKey });
        show(cfg, pair.privateKey, false);
      } else {
        status.textContent = "This browser cannot make WireGuard keys; asking the gateway…";
        const answer = await post("/api/v1/devices/gateway-keyed", { name: name });
        show(answer.config, answer.private_key, true);
      }
      status.textContent = "Device " + name + " added. Save its config now: it cannot be shown again.";
      const none = document.getElementById("no-devices");
      if (none) none.hidden = true;
      const row = document.createElement("li");
      row.textContent = name + " (new; reload to see it in the list)";
      document.getElementById("device-list-note").appendChild(row);
    } catch (e) {
      status.textContent = e.message;
    }
  });
})();
