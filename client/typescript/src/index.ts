// The artifactd TypeScript client: the generated messages and service descriptors of
// protos/artifactd/v1/ (src/gen/, by scripts/gen_protos.sh; do not edit), and typed clients for
// them over gRPC (HTTP/2) with Connect-ES's Node transport. How to connect (the server, TLS, a
// client certificate, a token, and their environment variables) is in connection.ts.
import { createClient, type Client } from "@connectrpc/connect";

import { ArtifactService } from "./gen/artifactd/v1/artifact_service_pb.js";
import { RunService } from "./gen/artifactd/v1/run_service_pb.js";
import { createArtifactdTransport, type ConnectionOptions } from "./connection.js";

export * from "./gen/artifactd/v1/artifact_service_pb.js";
export * from "./gen/artifactd/v1/run_service_pb.js";
export * from "./connection.js";

export interface ArtifactdClients {
  artifacts: Client<typeof ArtifactService>;
  runs: Client<typeof RunService>;
}

/** `connect`'s options under their earlier name (when they held only `interceptors`). */
export type ConnectOptions = ConnectionOptions;

/**
 * Typed clients for an artifactd server. `options` (or `target`, the server alone) say where
 * and how: `host:port` or an http(s):// URL, TLS with a CA bundle and a client certificate, a
 * bearer token. What they leave out comes from the environment, as in the Python client:
 * ARTIFACTD_SERVER, ARTIFACTD_TLS, ARTIFACTD_TLS_CA, ARTIFACTD_CLIENT_CERT,
 * ARTIFACTD_CLIENT_KEY, ARTIFACTD_TOKEN, ARTIFACTD_TOKEN_FILE. Without any of them: plaintext
 * to 127.0.0.1:50051.
 */
export function connect(
  target?: string | ConnectionOptions,
  options: ConnectionOptions = {},
): ArtifactdClients {
  const merged =
    typeof target === "string" ? { ...options, server: target } : { ...options, ...target };
  const transport = createArtifactdTransport(merged);
  return {
    artifacts: createClient(ArtifactService, transport),
    runs: createClient(RunService, transport),
  };
}
