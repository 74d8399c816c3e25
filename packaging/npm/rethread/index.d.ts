/** A running rethread process. */
export interface Rethread {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** `http://127.0.0.1:PORT/v1`, ready for `new OpenAI({ baseURL })`. */
  baseURL: string;
  port: number;
  /** Stops the process (SIGTERM). */
  stop(): Promise<void>;
  /** The tail of what the process wrote to its standard error (its log). */
  output(): string;
}

export interface StartOptions {
  /** Where to forward (default `https://api.openai.com`). */
  upstream?: string;
  /** How long to wait for `/healthz` (default 10,000 ms). */
  timeoutMs?: number;
  /** Any other rethread flag, camelCase or snake_case: `fallbackRetries: 0`. */
  [flag: string]: string | number | boolean | string[] | undefined;
}

/** Starts rethread on a free local port; resolves once it serves. */
export function start(options?: StartOptions): Promise<Rethread>;
/** The path of this platform's rethread binary. */
export function binaryPath(): string;
