/**
 * ferryd: the Ferry daemon.
 *
 *   ferryd --config /etc/ferry/ferry.yaml [--pretty] [--detach] [--check]
 *
 * SIGHUP reloads the config (interfaces, datapath, log; `mode`, `state_dir`,
 * `bpf`, `api` and `kubernetes` need a restart and are kept, with a
 * warning); SIGTERM/SIGINT stop serving (in kubernetes mode the watch
 * first) and leave the datapath forwarding (with --detach, xdp_lb is
 * detached on the way out). Exit codes: 2 invalid configuration (the key
 * is named), 1 start failed (e.g. Kubernetes credentials that cannot be
 * used), 0 after a clean stop.
 */
import { Command } from 'commander';
import { pino, type Logger } from 'pino';
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { Daemon } from './daemon.js';
import { FERRY_VERSION } from './version.js';

interface Flags {
  config: string;
  pretty?: boolean;
  detach?: boolean;
  check?: boolean;
}

function makeLogger(c: FerryConfig, pretty: boolean): Logger {
  if (pretty || c.log.pretty) {
    return pino({ level: c.log.level, transport: { target: 'pino-pretty', options: { colorize: process.stderr.isTTY, destination: 2 } } });
  }
  return pino({ level: c.log.level }, pino.destination(2));
}

async function main(): Promise<void> {
  const program = new Command('ferryd')
    .description('Ferry load balancer daemon')
    .version(FERRY_VERSION)
    .option('-c, --config <path>', 'configuration file', '/etc/ferry/ferry.yaml')
    .option('--pretty', 'human-readable logs instead of JSON')
    .option('--detach', 'detach xdp_lb (and the socket-LB in kubernetes mode) on exit')
    .option('--check', 'validate the configuration and exit')
    .showHelpAfterError();
  program.parse();
  const flags = program.opts<Flags>();

  let config: FerryConfig;
  try {
    config = loadConfig(flags.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`ferryd: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  if (flags.check) {
    console.log(`ferryd: ${flags.config} is valid`);
    return;
  }
  const log = makeLogger(config, flags.pretty ?? false);
  const daemon = new Daemon(config, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, detach: flags.detach ?? false }, 'stopping');
    try {
      await daemon.stop({ detach: flags.detach ?? false });
      process.exit(0);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'stop failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    try {
      daemon.reload(loadConfig(flags.config));
    } catch (err) {
      log.error({ err: (err as Error).message }, 'reload refused; keeping the running configuration');
    }
  });
  try {
    await daemon.start();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'start failed');
    await daemon.stop({ detach: false }).catch(() => undefined);
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  console.error(`ferryd: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
