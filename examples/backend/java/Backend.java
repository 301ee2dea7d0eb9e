// What a Java backend does with wsmesh: mint a client token, send a user a
// message with POST /send, and check the signature of an upstream webhook.
// JDK 11 or newer, no dependencies (java.net.http, javax.crypto). Copy the
// methods you need.
//
//   java Backend.java          # mint a token for USER_ID, then send USER_ID a message
//   java Backend.java mint     # print a token for USER_ID
//   java Backend.java send     # POST /send to USER_ID, print the answer
//   java Backend.java verify SECRET TIMESTAMP SIGNATURE BODYFILE   # exit 0 if valid
//
// Environment: WSMESH_URL (default http://127.0.0.1:8080), WSMESH_API_KEY
// (auth.api_keys), WSMESH_JWT_SECRET (auth.jwt_secret), USER_ID.

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Base64;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class Backend {

    /**
     * Returns a client token (JWT, HS256) for user on device, valid for ttlSeconds.
     * The client connects with ws://host:8080/ws?token=...
     */
    static String mintToken(String jwtSecret, String user, String device, long ttlSeconds)
            throws GeneralSecurityException {
        long now = System.currentTimeMillis() / 1000;
        String header = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
        String claims = "{\"sub\":" + jsonString(user)
                + ",\"device\":" + jsonString(device)
                + ",\"iat\":" + now
                + ",\"exp\":" + (now + ttlSeconds) // required: wsmesh refuses a token without exp
                + "}";
        Base64.Encoder b64 = Base64.getUrlEncoder().withoutPadding();
        String signingInput = b64.encodeToString(header.getBytes(StandardCharsets.UTF_8))
                + "." + b64.encodeToString(claims.getBytes(StandardCharsets.UTF_8));
        // auth.jwt_secret is used as the raw bytes of the string (UTF-8), NOT
        // base64-decoded, even when it looks like base64.
        byte[] sig = hmacSha256(jwtSecret.getBytes(StandardCharsets.UTF_8),
                signingInput.getBytes(StandardCharsets.UTF_8));
        return signingInput + "." + b64.encodeToString(sig);
    }

    /**
     * Posts a JSON value (dataJson) to every session of user with POST /send and
     * returns wsmesh's answer: JSON with id, delivered, offline, ..., results.
     */
    static String sendToUser(HttpClient http, String baseUrl, String apiKey, String user, String dataJson)
            throws IOException, InterruptedException {
        String body = "{\"users\":[" + jsonString(user) + "],\"data\":" + dataJson + "}";
        HttpRequest req = HttpRequest.newBuilder(URI.create(baseUrl + "/send"))
                .timeout(Duration.ofSeconds(10))
                .header("Authorization", "Bearer " + apiKey)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body, StandardCharsets.UTF_8))
                .build();
        HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (resp.statusCode() != 200) { // wsmesh says why in {"error": "..."}
            throw new IOException("POST /send: " + resp.statusCode() + ": " + resp.body().strip());
        }
        return resp.body().strip();
    }

    /** How far a webhook's Wsmesh-Timestamp may be from now. */
    static final long MAX_SKEW_SECONDS = 5 * 60;

    /**
     * Checks an upstream webhook: signature is its Wsmesh-Signature header,
     * timestamp its Wsmesh-Timestamp header (Unix seconds), body the raw request
     * body bytes, read before any JSON parsing. The signature is
     * "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
     */
    static boolean verifySignature(byte[] secret, String timestamp, String signature, byte[] body,
            long nowSeconds) throws GeneralSecurityException {
        long ts;
        try {
            ts = Long.parseLong(timestamp);
        } catch (NumberFormatException e) {
            return false;
        }
        if (Math.abs(nowSeconds - ts) > MAX_SKEW_SECONDS) {
            return false; // a replay, or a wrong clock
        }
        byte[] prefix = (timestamp + ".").getBytes(StandardCharsets.UTF_8);
        byte[] signed = new byte[prefix.length + body.length];
        System.arraycopy(prefix, 0, signed, 0, prefix.length);
        System.arraycopy(body, 0, signed, prefix.length, body.length);
        String expected = "v1=" + hex(hmacSha256(secret, signed));
        // MessageDigest.isEqual takes constant time for arrays of equal length.
        return MessageDigest.isEqual(signature.getBytes(StandardCharsets.UTF_8),
                expected.getBytes(StandardCharsets.UTF_8));
    }

    static byte[] hmacSha256(byte[] key, byte[] data) throws GeneralSecurityException {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        return mac.doFinal(data);
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder(b.length * 2);
        for (byte x : b) {
            sb.append(Character.forDigit((x >> 4) & 0xf, 16)).append(Character.forDigit(x & 0xf, 16));
        }
        return sb.toString();
    }

    /** Returns s as a JSON string literal. */
    static String jsonString(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                sb.append('\\').append(c);
            } else if (c < 0x20) {
                sb.append(String.format("\\u%04x", (int) c));
            } else {
                sb.append(c);
            }
        }
        return sb.append('"').toString();
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            throw new IllegalStateException(name + " not set");
        }
        return v;
    }

    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "all";
        if (mode.equals("verify") && args.length == 5) {
            // upstream.secret: raw string bytes too.
            byte[] secret = args[1].getBytes(StandardCharsets.UTF_8);
            byte[] body = Files.readAllBytes(Path.of(args[4]));
            if (!verifySignature(secret, args[2], args[3], body, System.currentTimeMillis() / 1000)) {
                System.err.println("invalid signature");
                System.exit(1);
            }
            System.out.println("valid");
            return;
        }
        if (!(mode.equals("all") || mode.equals("mint") || mode.equals("send")) || args.length > 1) {
            System.err.println("usage: java Backend.java [mint | send | verify SECRET TIMESTAMP SIGNATURE BODYFILE]");
            System.exit(2);
        }

        String baseUrl = System.getenv().getOrDefault("WSMESH_URL", "http://127.0.0.1:8080");
        String user = env("USER_ID");
        if (!mode.equals("send")) {
            System.out.println(mintToken(env("WSMESH_JWT_SECRET"), user, "web", 3600));
        }
        if (!mode.equals("mint")) {
            // HTTP/1.1: over plain http:// the client would otherwise try an h2c upgrade.
            HttpClient http = HttpClient.newBuilder()
                    .version(HttpClient.Version.HTTP_1_1)
                    .connectTimeout(Duration.ofSeconds(5))
                    .build();
            String apiKey = System.getenv().getOrDefault("WSMESH_API_KEY", "");
            System.out.println(sendToUser(http, baseUrl, apiKey, user, "{\"text\":\"hello from java\"}"));
        }
    }
}
