/** Reconnect delays: exponential with full jitter, never below a server-given retry_after, so a
 * fleet that lost the same gateway does not come back in lockstep (same as offsync_device.backoff). */
export class Backoff {
  constructor(
    readonly base = 0.2,
    readonly cap = 30,
    readonly factor = 2,
    private readonly random: () => number = Math.random,
  ) {}

  /** Seconds to wait before reconnect attempt `attempt` (0-based). */
  delay(attempt: number, atLeast = 0): number {
    const ceiling = Math.min(this.cap, this.base * this.factor ** Math.min(attempt, 60));
    return Math.max(atLeast, this.random() * ceiling);
  }
}
