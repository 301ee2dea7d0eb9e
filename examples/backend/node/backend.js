// What a Node.js backend does with wsmesh: mint a client token, send a user
// a message with POST /send, and check the signature of an upstream webhook.
// Copy the functions you need. Node 18 or newer (fetch is built in).
//
//   npm ci                          # installs jsonwebtoken, pinned in package-lock.json
//   node backend.js                 # mint a token for USER_ID, then send USER_ID a message
//   node backend.js mint            # print a token for USER_ID
//   node backend.js send            # POST /send to USER_ID, print the answer
//   node backend.js verify SECRET TIMESTAMP SIGNATURE BODYFILE   # exit 0 if valid
//
// Environment: WSMESH_URL (default http://127.0.0.1:8080), WSMESH_API_KEY
// (auth.api_keys), WSMESH_JWT_SECRET (auth.jwt_secret), USER_ID.

import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import jwt from "jsonwebtoken";

// mintToken returns a client token (HS256) for user on device; the client
// connects with ws://host:8080/ws?token=...
export function mintToken(jwtSecret, user, device, ttlSeconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: user,
    device,
    iat: now,
    exp: now + ttlSeconds, // required: wsmesh refuses a token without exp
  };
  // auth.jwt_secret is used as the raw bytes of the string (UTF-8), NOT
  // base64-decoded, even when it looks like base64.
  return jwt.sign(claims, Buffer.from(jwtSecret, "utf8"), { algorithm: "HS256" });
}

// sendToUser posts data to every session of user with POST /send and
// returns wsmesh's answer (id, delivered, offline, ..., results).
export async function sendToUser(baseUrl, apiKey, user, data) {
  const resp = await fetch(baseUrl + "/send", {
    method: "POST",
    headers: { Authorization: "Bearer " + apiKey, "Content-Type": "application/json" },
    body: JSON.stringify({ users: [user], data }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await resp.text();
  if (!resp.ok) {
    throw new Error(`POST /send: ${resp.status}: ${text.trim()}`); // wsmesh says why in {"error": "..."}
  }
  return JSON.parse(text);
}

const MAX_SKEW_SECONDS = 5 * 60; // how far Wsmesh-Timestamp may be from now

// verifySignature checks an upstream webhook: signature is its
// Wsmesh-Signature header, timestamp its Wsmesh-Timestamp header (Unix
// seconds), body the raw request body as a Buffer, read before any JSON
// parsing (Express: express.raw({ type: "application/json" })). The
// signature is "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
export function verifySignature(secret, timestamp, signature, body, nowSeconds = Date.now() / 1000) {
  if (!/^\d+$/.test(timestamp)) {
    return false;
  }
  if (Math.abs(nowSeconds - Number(timestamp)) > MAX_SKEW_SECONDS) {
    return false; // a replay, or a wrong clock
  }
  // upstream.secret: raw string bytes too (Buffer.from(secret, "utf8")).
  const mac = createHmac("sha256", secret).update(timestamp + ".").update(body).digest("hex");
  const expected = Buffer.from("v1=" + mac);
  const got = Buffer.from(String(signature));
  // timingSafeEqual throws on different lengths; the length is no secret.
  return got.length === expected.length && timingSafeEqual(got, expected);
}

async function main(args) {
  const mode = args[0] ?? "all";
  if (mode === "verify" && args.length === 5) {
    const [, secret, timestamp, signature, bodyFile] = args;
    if (!verifySignature(Buffer.from(secret, "utf8"), timestamp, signature, readFileSync(bodyFile))) {
      console.error("invalid signature");
      return 1;
    }
    console.log("valid");
    return 0;
  }
  if (!["all", "mint", "send"].includes(mode) || args.length > 1) {
    console.error("usage: node backend.js [mint | send | verify SECRET TIMESTAMP SIGNATURE BODYFILE]");
    return 2;
  }

  const baseUrl = process.env.WSMESH_URL || "http://127.0.0.1:8080";
  const user = process.env.USER_ID;
  if (!user) {
    throw new Error("USER_ID not set");
  }
  if (mode !== "send") {
    if (!process.env.WSMESH_JWT_SECRET) {
      throw new Error("WSMESH_JWT_SECRET not set");
    }
    console.log(mintToken(process.env.WSMESH_JWT_SECRET, user, "web"));
  }
  if (mode !== "mint") {
    const answer = await sendToUser(baseUrl, process.env.WSMESH_API_KEY ?? "", user, { text: "hello from node" });
    console.log(JSON.stringify(answer));
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
