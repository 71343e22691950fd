// Where and how the TypeScript client connects: the server, TLS (a CA bundle, a client
// certificate for mutual TLS) and a bearer token, from explicit options with the same
// environment variables as the Python client and CLI as fallbacks. Hand-written; the generated
// code is in src/gen/.
import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";

import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

/** The variables the Python client and CLI read, with the same names and meaning. */
export const SERVER_VARIABLE = "ARTIFACTD_SERVER";
export const TLS_VARIABLE = "ARTIFACTD_TLS";
export const TLS_CA_VARIABLE = "ARTIFACTD_TLS_CA";
export const CLIENT_CERT_VARIABLE = "ARTIFACTD_CLIENT_CERT";
export const CLIENT_KEY_VARIABLE = "ARTIFACTD_CLIENT_KEY";
export const TOKEN_VARIABLE = "ARTIFACTD_TOKEN";
export const TOKEN_FILE_VARIABLE = "ARTIFACTD_TOKEN_FILE";

/** The server when neither `server` nor ARTIFACTD_SERVER names one (as the Python client). */
export const DEFAULT_SERVER = "127.0.0.1:50051";

export interface ConnectionOptions {
  /**
   * `host:port`, or a URL: `https://host:port` (TLS) or `http://host:port` (plaintext).
   * Default: ARTIFACTD_SERVER, else 127.0.0.1:50051.
   */
  server?: string;
  /**
   * TLS, the server's certificate checked against Node's default CAs unless `ca`/`caFile` name
   * others. Default: ARTIFACTD_TLS (1/true/yes/on). Implied by a CA, a client certificate or
   * key, and by an https:// server.
   */
  tls?: boolean;
  /** PEM file of the CA bundle the server's certificate is checked against (ARTIFACTD_TLS_CA). */
  caFile?: string;
  /** The CA bundle itself (PEM), instead of `caFile`. */
  ca?: string | Buffer;
  /** PEM file of a client certificate, for servers that demand one (ARTIFACTD_CLIENT_CERT). */
  clientCert?: string;
  /** PEM file of the client certificate's key (ARTIFACTD_CLIENT_KEY). */
  clientKey?: string;
  /**
   * A bearer token (or JWT) sent as `authorization: Bearer <token>` with every call.
   * Default: ARTIFACTD_TOKEN, else the first line of ARTIFACTD_TOKEN_FILE.
   */
  token?: string;
  /** A file whose first line is the token (a mounted secret); `token` wins over it. */
  tokenFile?: string;
  /** Where the fallbacks are read: `process.env` unless given (`{}` reads none). */
  env?: Record<string, string | undefined>;
  /** More interceptors for every call, after the one that adds the token. */
  interceptors?: Interceptor[];
}

/** What `resolveConnection` makes of the options and the environment. */
export interface ResolvedConnection {
  /** `https://host:port` or `http://host:port`. */
  baseUrl: string;
  tls: boolean;
  /** The options for Node's http2.connect: the CA bundle, client certificate and key. */
  nodeOptions: SecureClientSessionOptions;
  /** The bearer token, when there is one. */
  token?: string;
}

const TRUE = ["1", "true", "yes", "on"];

/** An `INVALID_ARGUMENT` error, as the Python client raises for the same mistakes. */
function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** A setting: the option when given (even ""), else the variable when set and not empty. */
function setting(
  option: string | undefined,
  env: Record<string, string | undefined>,
  variable: string,
): string | undefined {
  if (option !== undefined) return option === "" ? undefined : option;
  const value = env[variable];
  return value === undefined || value === "" ? undefined : value;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw invalid(`cannot read the ${what} '${path}': ${reason}`);
  }
}

/** The first line of the token file, trimmed; an unreadable or empty file is an error. */
function readToken(path: string, origin: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw invalid(`cannot read ${origin}='${path}': ${reason}`);
  }
  const token = (text.split(/\r?\n/, 1)[0] ?? "").trim();
  if (token === "") throw invalid(`${origin}='${path}' is empty`);
  return token;
}

/** The token: `token`, `tokenFile`, then ARTIFACTD_TOKEN, then ARTIFACTD_TOKEN_FILE. */
function resolveToken(
  options: ConnectionOptions,
  env: Record<string, string | undefined>,
): string | undefined {
  const explicit = options.token?.trim();
  if (explicit) return explicit;
  if (options.tokenFile) return readToken(options.tokenFile, "tokenFile");
  if (options.token !== undefined || options.tokenFile !== undefined) return undefined;
  const variable = env[TOKEN_VARIABLE]?.trim();
  if (variable) return variable;
  const file = env[TOKEN_FILE_VARIABLE]?.trim();
  return file ? readToken(file, TOKEN_FILE_VARIABLE) : undefined;
}

/**
 * Resolves the options against the environment, reads the PEM and token files, and checks
 * them: a client certificate without its key (or the reverse), an unreadable file, an empty
 * token file, or TLS settings with an http:// server are `INVALID_ARGUMENT` errors.
 */
export function resolveConnection(options: ConnectionOptions = {}): ResolvedConnection {
  const env = options.env ?? process.env;
  const server = setting(options.server, env, SERVER_VARIABLE) ?? DEFAULT_SERVER;
  const caFile = setting(options.caFile, env, TLS_CA_VARIABLE);
  const clientCert = setting(options.clientCert, env, CLIENT_CERT_VARIABLE);
  const clientKey = setting(options.clientKey, env, CLIENT_KEY_VARIABLE);
  const tlsWanted =
    options.tls ?? TRUE.includes((env[TLS_VARIABLE] ?? "").trim().toLowerCase());
  const wantsTls =
    tlsWanted || options.ca !== undefined || Boolean(caFile || clientCert || clientKey);

  const scheme = /^(https?):\/\//i.exec(server)?.[1]?.toLowerCase();
  if (scheme === "http" && wantsTls) {
    throw invalid(`${server} is an http:// (plaintext) URL, but TLS settings are given`);
  }
  const tls = scheme === "https" || wantsTls;
  const baseUrl = scheme === undefined ? `${tls ? "https" : "http"}://${server}` : server;

  if (Boolean(clientCert) !== Boolean(clientKey)) {
    throw invalid(
      `a client certificate needs its key: set both ${CLIENT_CERT_VARIABLE} and ` +
        `${CLIENT_KEY_VARIABLE} (clientCert and clientKey)`,
    );
  }
  const nodeOptions: SecureClientSessionOptions = {};
  if (options.ca !== undefined) nodeOptions.ca = options.ca;
  else if (caFile) nodeOptions.ca = readPem(caFile, "CA bundle");
  if (clientCert && clientKey) {
    nodeOptions.cert = readPem(clientCert, "client certificate");
    nodeOptions.key = readPem(clientKey, "client key");
  }
  const token = resolveToken(options, env);
  const resolved: ResolvedConnection = { baseUrl, tls, nodeOptions };
  if (token !== undefined) resolved.token = token;
  return resolved;
}

/**
 * Adds `authorization: Bearer <token>` to every call. Sent over plaintext too, as the Python
 * client does: behind a mesh sidecar that terminates mutual TLS, the hop to the server is
 * plaintext on purpose. Without such a sidecar, use TLS whenever you send a token.
 */
export function bearerToken(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => (request) => {
    request.header.set("authorization", value);
    return next(request);
  };
}

/** Node's error codes in `err`'s chain of causes. */
function nodeErrorCodes(err: unknown): string[] {
  const found: string[] = [];
  const seen = new Set<unknown>();
  for (let e: unknown = err; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") found.push(code);
  }
  return found;
}

const CONNECTION_DROPPED = [
  "ECONNRESET",
  "EPIPE",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
];
const TLS_FAILURE = /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED|SELF_SIGNED)/;

/**
 * A connection that failed or was dropped, as gRPC's own clients (Python, Go) report it:
 * `UNAVAILABLE`. Connect's Node transport says `INTERNAL` for a refused server certificate and
 * `CANCELED` or `ABORTED` for a connection the server closed, which is what a gRPC server
 * requiring a client certificate does, without a TLS alert, when none or a stranger's comes.
 * Statuses the server sent, and calls the caller cancelled, stay as they are.
 */
function transportFailure(
  err: unknown,
  signal: AbortSignal,
  baseUrl: string,
  tls: boolean,
): unknown {
  if (!(err instanceof ConnectError) || signal.aborted) return err;
  const codes = nodeErrorCodes(err.cause);
  let message: string | undefined;
  if (err.code === Code.Internal && codes.some((c) => TLS_FAILURE.test(c))) {
    message = `TLS handshake with ${baseUrl} failed: ${err.rawMessage}`;
  } else if (
    (err.code === Code.Canceled && /stream closed with error code CANCEL/.test(err.rawMessage)) ||
    codes.some((c) => CONNECTION_DROPPED.includes(c))
  ) {
    message =
      `${baseUrl} closed the connection (${err.rawMessage})` +
      (tls
        ? ": if it requires a client certificate (mutual TLS), it was not sent or not " +
          `accepted: set clientCert and clientKey (${CLIENT_CERT_VARIABLE}, ` +
          `${CLIENT_KEY_VARIABLE}) to a certificate from a CA the server trusts`
        : `: if it serves TLS, connect with TLS: set caFile or tls (${TLS_CA_VARIABLE}, ` +
          `${TLS_VARIABLE}=1) or use an https:// server URL`);
  }
  if (message === undefined) return err;
  return new ConnectError(message, Code.Unavailable, undefined, undefined, err);
}

function transportFailures(baseUrl: string, tls: boolean): Interceptor {
  return (next) => async (request) => {
    const map = (err: unknown) => transportFailure(err, request.signal, baseUrl, tls);
    let response;
    try {
      response = await next(request);
    } catch (err) {
      throw map(err);
    }
    if (!response.stream) return response;
    const messages = response.message;
    return {
      ...response,
      message: (async function* () {
        try {
          yield* messages;
        } catch (err) {
          throw map(err);
        }
      })(),
    };
  };
}

/** A gRPC transport to the server the options (or the environment) name. */
export function createArtifactdTransport(options: ConnectionOptions = {}): Transport {
  const resolved = resolveConnection(options);
  const interceptors: Interceptor[] = [transportFailures(resolved.baseUrl, resolved.tls)];
  if (resolved.token !== undefined) interceptors.push(bearerToken(resolved.token));
  interceptors.push(...(options.interceptors ?? []));
  return createGrpcTransport({
    baseUrl: resolved.baseUrl,
    nodeOptions: resolved.tls ? resolved.nodeOptions : {},
    interceptors,
  });
}

/** `UNAUTHENTICATED` for Code.Unauthenticated: the gRPC name of a Connect code. */
export function grpcStatusName(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
