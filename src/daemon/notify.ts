/**
 * systemd readiness and watchdog (sd_notify): READY=1 once the datapath is
 * reconciled and the API listens, STATUS= on the way, WATCHDOG=1 at half
 * of WatchdogSec. Outside systemd every call is a no-op.
 */
import type { Logger } from 'pino';
import { loadNative } from '../datapath/native.js';

export class Notifier {
  constructor(private readonly log: Logger) {}

  private send(state: string): void {
    try {
      loadNative().sdNotify(state);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'sd_notify failed');
    }
  }

  status(text: string): void {
    this.send(`STATUS=${text}`);
  }

  ready(text: string): void {
    this.send(`READY=1\nSTATUS=${text}\nMAINPID=${process.pid}`);
  }

  stopping(): void {
    this.send('STOPPING=1\nSTATUS=stopping');
  }

  watchdog(): void {
    this.send('WATCHDOG=1');
  }

  /** Half the watchdog period systemd asked for, or undefined. */
  watchdogIntervalMs(): number | undefined {
    const usec = Number(process.env['WATCHDOG_USEC']);
    const pid = process.env['WATCHDOG_PID'];
    if (!Number.isFinite(usec) || usec <= 0) return undefined;
    if (pid && Number(pid) !== process.pid) return undefined;
    return Math.max(Math.floor(usec / 2000), 100);
  }
}
