/**
 * Sign-in against profile-service (`POST /v1/auth/login`, `POST /v1/auth/refresh`, see
 * docs/identity.md) and a token source that renews the access token with the rotating refresh
 * token. The session is kept in a small persistence slot (localStorage in a browser), so the app
 * reopens offline still signed in.
 */
import type { TokenSource } from "./client.js";

export interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  refresh_expires_in?: number;
  user_id: string;
}

export interface SessionData {
  authUrl: string;
  username: string;
  userId: string;
  deviceId: string;
  accessToken: string;
  refreshToken: string;
  /** ms since the epoch */
  expiresAt: number;
  refreshExpiresAt: number | null;
}

/** Where the session is kept: getItem/setItem/removeItem, as localStorage has them. */
export interface KeyValue {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export class AuthError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "AuthError";
  }
}

async function post(url: string, body: unknown, fetchImpl: typeof fetch): Promise<Tokens> {
  const res = await fetchImpl(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const err = (data.error as Record<string, unknown> | undefined) ?? data;
    const msg = String(err.message ?? err.detail ?? `HTTP ${res.status}`);
    throw new AuthError(res.status, msg);
  }
  return data as unknown as Tokens;
}

const SLOT = "offsync.session";

export class AuthSession implements TokenSource {
  private renewing: Promise<string> | null = null;

  constructor(
    public data: SessionData,
    private readonly kv: KeyValue | null = null,
    private readonly fetchImpl: typeof fetch = globalThis.fetch.bind(globalThis),
  ) {}

  /** Sign in with a username and password for this device. */
  static async login(
    authUrl: string,
    username: string,
    password: string,
    deviceId: string,
    kv: KeyValue | null = null,
    fetchImpl: typeof fetch = globalThis.fetch.bind(globalThis),
  ): Promise<AuthSession> {
    const t = await post(
      `${authUrl.replace(/\/$/, "")}/v1/auth/login`,
      { username, password, device_id: deviceId, audience: "device" },
      fetchImpl,
    );
    const s = new AuthSession(AuthSession.fromTokens(authUrl, username, deviceId, t), kv, fetchImpl);
    s.save();
    return s;
  }

  /** The session kept by an earlier sign-in, or null. */
  static restore(kv: KeyValue, fetchImpl?: typeof fetch): AuthSession | null {
    const raw = kv.getItem(SLOT);
    if (!raw) return null;
    try {
      return new AuthSession(JSON.parse(raw) as SessionData, kv, fetchImpl);
    } catch {
      return null;
    }
  }

  private static fromTokens(authUrl: string, username: string, deviceId: string, t: Tokens): SessionData {
    const now = Date.now();
    return {
      authUrl,
      username,
      userId: t.user_id,
      deviceId,
      accessToken: t.access_token,
      refreshToken: t.refresh_token,
      expiresAt: now + t.expires_in * 1000,
      refreshExpiresAt: t.refresh_expires_in ? now + t.refresh_expires_in * 1000 : null,
    };
  }

  private save(): void {
    this.kv?.setItem(SLOT, JSON.stringify(this.data));
  }

  /** Forget the stored sign-in on this device (the server ended it, or the user signed out). */
  signOut(): void {
    this.kv?.removeItem(SLOT);
  }

  /** Sign out: revoke this sign-in on the server, which closes its open sessions (best effort:
   * offline, the refresh token is forgotten anyway and expires on its own), then forget it. */
  async logout(): Promise<void> {
    try {
      await post(
        `${this.data.authUrl.replace(/\/$/, "")}/v1/auth/logout`,
        { refresh_token: this.data.refreshToken },
        this.fetchImpl,
      );
    } catch {
      // offline or already revoked: nothing more to do on the server
    }
    this.signOut();
  }

  get userId(): string {
    return this.data.userId;
  }

  expiresAt(): number {
    return this.data.expiresAt;
  }

  /** A valid access token, renewed first when it is about to expire. */
  async token(): Promise<string> {
    if (Date.now() > this.data.expiresAt - 10_000) return this.renew();
    return this.data.accessToken;
  }

  /** Trade the refresh token for new tokens (the refresh token rotates: each works once). */
  renew(): Promise<string> {
    // One renewal at a time: two concurrent ones would spend the same refresh token twice.
    this.renewing ??= (async () => {
      try {
        const t = await post(
          `${this.data.authUrl.replace(/\/$/, "")}/v1/auth/refresh`,
          { refresh_token: this.data.refreshToken, device_id: this.data.deviceId },
          this.fetchImpl,
        );
        this.data = AuthSession.fromTokens(this.data.authUrl, this.data.username, this.data.deviceId, t);
        this.save();
        return this.data.accessToken;
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }
}

/** A fixed token, or a function returning one (tokens minted elsewhere). */
export function staticToken(token: string | (() => Promise<string> | string)): TokenSource {
  return { token: async () => (typeof token === "string" ? token : token()) };
}
