// The artifactd TypeScript client: the generated messages and service descriptors of
// protos/artifactd/v1/ (src/gen/, by scripts/gen_protos.sh; do not edit), and typed clients for
// them over gRPC (HTTP/2) with Connect-ES's Node transport.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ArtifactService } from "./gen/artifactd/v1/artifact_service_pb.js";
import { RunService } from "./gen/artifactd/v1/run_service_pb.js";

export * from "./gen/artifactd/v1/artifact_service_pb.js";
export * from "./gen/artifactd/v1/run_service_pb.js";

export interface ArtifactdClients {
  artifacts: Client<typeof ArtifactService>;
  runs: Client<typeof RunService>;
}

export interface ConnectOptions {
  /** Interceptors for every call, e.g. one that sets an `authorization` header. */
  interceptors?: Interceptor[];
}

/**
 * Typed clients for a server at `target`: `host:port` (plaintext gRPC, as the Python client's
 * default on loopback) or a URL, `http://host:port` or `https://host:port` (TLS with Node's
 * default trust store).
 */
export function connect(target: string, options: ConnectOptions = {}): ArtifactdClients {
  const baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
  const transport = createGrpcTransport({ baseUrl, interceptors: options.interceptors ?? [] });
  return {
    artifacts: createClient(ArtifactService, transport),
    runs: createClient(RunService, transport),
  };
}
