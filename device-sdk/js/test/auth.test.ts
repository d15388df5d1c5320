/** Sign-in against the identity contract (POST /v1/auth/login, /v1/auth/refresh) with a scripted
 * fetch: the session is kept, the rotating refresh token is spent once even when two renewals
 * race, and failures say what happened. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AuthError, AuthSession, type KeyValue } from "../src/auth.js";

class Memory implements KeyValue {
  m = new Map<string, string>();
  getItem(k: string): string | null {
    return this.m.get(k) ?? null;
  }
  setItem(k: string, v: string): void {
    this.m.set(k, v);
  }
  removeItem(k: string): void {
    this.m.delete(k);
  }
}

function server() {
  const calls: { url: string; body: any }[] = [];
  let n = 0;
  const fetchImpl = (async (url: string, init: RequestInit) => {
    const body = JSON.parse(String(init.body));
    calls.push({ url, body });
    await new Promise((r) => setTimeout(r, 5));
    if (url.endsWith("/v1/auth/login") && body.password !== "right") {
      return new Response(JSON.stringify({ error: { code: "unauthenticated", message: "wrong username or password" } }), {
        status: 401,
      });
    }
    n++;
    return new Response(
      JSON.stringify({
        access_token: `access-${n}`,
        refresh_token: `refresh-${n}`,
        expires_in: 900,
        refresh_expires_in: 86400,
        user_id: "u1",
        username: "maria",
      }),
      { status: 200 },
    );
  }) as unknown as typeof fetch;
  return { calls, fetchImpl };
}

test("login sends the contract's body, keeps the session, and renewal rotates the refresh token once", async () => {
  const { calls, fetchImpl } = server();
  const kv = new Memory();
  const s = await AuthSession.login("http://auth/", "maria", "right", "dev-1", kv, fetchImpl);
  assert.deepEqual(calls[0], {
    url: "http://auth/v1/auth/login",
    body: { username: "maria", password: "right", device_id: "dev-1", audience: "device" },
  });
  assert.equal(await s.token(), "access-1");
  assert.equal(s.userId, "u1");
  const [a, b] = await Promise.all([s.renew(), s.renew()]);
  assert.equal(a, "access-2");
  assert.equal(b, "access-2", "two racing renewals share one refresh");
  assert.deepEqual(calls[1], { url: "http://auth/v1/auth/refresh", body: { refresh_token: "refresh-1", device_id: "dev-1" } });
  assert.equal(calls.length, 2);
  const restored = AuthSession.restore(kv, fetchImpl);
  assert.equal(await restored?.token(), "access-2");
  restored?.signOut();
  assert.equal(AuthSession.restore(kv), null);
});

test("a wrong password is an AuthError with the server's status and message", async () => {
  const { fetchImpl } = server();
  await assert.rejects(
    AuthSession.login("http://auth", "maria", "wrong", "dev-1", null, fetchImpl),
    (e: unknown) => e instanceof AuthError && e.status === 401 && /wrong username or password/.test(e.message),
  );
});

test("an access token about to expire is renewed before use", async () => {
  const { fetchImpl } = server();
  const s = await AuthSession.login("http://auth", "maria", "right", "dev-1", null, fetchImpl);
  s.data.expiresAt = Date.now() + 5_000; // inside the 10 s margin
  assert.equal(await s.token(), "access-2");
});
