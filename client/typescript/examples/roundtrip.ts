// Uploads a file to an artifactd server, lists its directory and downloads it again with the
// generated TypeScript client, and prints the sha256 of the source, of what the server stored,
// listed and sent back.
//
//   node dist/examples/roundtrip.js [OPTIONS] FILE OUT [ARTIFACT_PATH]
//
// FILE is the file to upload, OUT where the download goes, ARTIFACT_PATH the path on the server
// (default roundtrip/<base name of FILE>). The options are the Python CLI's, each with the same
// environment variable as its fallback (connect() in src/connection.ts reads them):
//   --server HOST:PORT   or an http(s):// URL (ARTIFACTD_SERVER; default 127.0.0.1:50051)
//   --tls                TLS with Node's default CAs (ARTIFACTD_TLS=1)
//   --tls-ca PEM         CA bundle for the server's certificate (ARTIFACTD_TLS_CA)
//   --client-cert PEM    client certificate for mutual TLS (ARTIFACTD_CLIENT_CERT)
//   --client-key PEM     its key (ARTIFACTD_CLIENT_KEY)
//   --token-file FILE    first line: the bearer token (ARTIFACTD_TOKEN_FILE; or ARTIFACTD_TOKEN)
// The last line printed is a JSON object with the four digests; the exit status is 1 unless they
// all agree. A failed call ends with "roundtrip: status <gRPC code>: <message>" and status 1.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, posix } from "node:path";
import { once } from "node:events";
import { parseArgs } from "node:util";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";

import {
  connect,
  grpcStatusName,
  OverwritePolicy,
  type ArtifactdClients,
  type ConnectionOptions,
  type FileInfo,
  type LogArtifactRequestSchema,
} from "../src/index.js";

/** Largest chunk the example sends, whatever the server prefers (it accepts 16 MiB messages). */
const MAX_CHUNK = 1 << 20;

type Artifacts = ArtifactdClients["artifacts"];

/** The LogArtifact stream: a header (path, size, policy), the data in chunks, then finish. */
async function* uploadMessages(
  source: string,
  artifact: string,
  size: bigint,
  chunkSize: number,
  digest: ReturnType<typeof createHash>,
): AsyncGenerator<MessageInitShape<typeof LogArtifactRequestSchema>> {
  yield { header: { path: artifact, size, overwrite: OverwritePolicy.OVERWRITE } };
  for await (const chunk of createReadStream(source, { highWaterMark: chunkSize })) {
    const data = chunk as Buffer;
    digest.update(data);
    yield { data };
  }
  yield { finish: { sha256: digest.copy().digest("hex") } };
}

async function upload(
  artifacts: Artifacts,
  source: string,
  artifact: string,
): Promise<{ sourceSha256: string; stored: FileInfo }> {
  const caps = await artifacts.getCapabilities({});
  const preferred = Number(caps.chunkSize);
  const chunkSize = preferred > 0 && preferred < MAX_CHUNK ? preferred : MAX_CHUNK;
  const size = BigInt((await stat(source)).size);
  const digest = createHash("sha256");
  const reply = await artifacts.logArtifact(uploadMessages(source, artifact, size, chunkSize, digest));
  if (reply.file === undefined) throw new Error("LogArtifact: no FileInfo in the reply");
  return { sourceSha256: digest.digest("hex"), stored: reply.file };
}

/** Lists the artifact's directory, page by page, and returns its entry. */
async function find(artifacts: Artifacts, artifact: string): Promise<FileInfo> {
  const parent = posix.dirname(artifact);
  const dir = parent === "." ? "" : parent;
  let pageToken = "";
  do {
    const page = await artifacts.listArtifacts({ path: dir, pageToken });
    const entry = page.files.find((f) => f.path === artifact);
    if (entry !== undefined) return entry;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  throw new Error(`${artifact} is not listed in "${dir}"`);
}

/** DownloadArtifact (FileInfo first, then data) into `out`; returns the sha256 of the bytes. */
async function download(artifacts: Artifacts, artifact: string, out: string): Promise<string> {
  const digest = createHash("sha256");
  const file = createWriteStream(out);
  let info: FileInfo | undefined;
  let received = 0n;
  try {
    for await (const message of artifacts.downloadArtifact({ path: artifact })) {
      info ??= message.info;
      digest.update(message.data);
      received += BigInt(message.data.length);
      if (!file.write(message.data)) await once(file, "drain");
    }
  } finally {
    file.end();
    await once(file, "close");
  }
  if (info === undefined) throw new Error("DownloadArtifact: no FileInfo in the first message");
  if (received !== info.fileSize) {
    throw new Error(`DownloadArtifact: ${received} bytes received, FileInfo says ${info.fileSize}`);
  }
  return digest.digest("hex");
}

const USAGE =
  "usage: roundtrip [--server HOST:PORT] [--tls] [--tls-ca PEM] [--client-cert PEM] " +
  "[--client-key PEM] [--token-file FILE] FILE OUT [ARTIFACT_PATH]";

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        server: { type: "string" },
        tls: { type: "boolean" },
        "tls-ca": { type: "string" },
        "client-cert": { type: "string" },
        "client-key": { type: "string" },
        "token-file": { type: "string" },
      },
    });
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : err}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (positionals.length < 2 || positionals.length > 3) {
    console.error(USAGE);
    return 2;
  }
  const [source, out] = positionals as [string, string];
  const artifact = positionals[2] ?? `roundtrip/${basename(source)}`;
  // Options left undefined fall back to the environment's variables.
  const options: ConnectionOptions = {
    server: values.server,
    tls: values.tls,
    caFile: values["tls-ca"],
    clientCert: values["client-cert"],
    clientKey: values["client-key"],
    tokenFile: values["token-file"],
  };
  const { artifacts } = connect(options);

  const { sourceSha256, stored } = await upload(artifacts, source, artifact);
  console.log(
    `uploaded   ${stored.path}: ${stored.fileSize} bytes, sha256 ${stored.sha256} (source ${sourceSha256})`,
  );
  const listed = await find(artifacts, artifact);
  console.log(`listed     ${listed.path}: ${listed.fileSize} bytes, sha256 ${listed.sha256}`);
  const downloadedSha256 = await download(artifacts, artifact, out);
  console.log(`downloaded ${artifact} to ${out}: sha256 ${downloadedSha256}`);

  console.log(
    JSON.stringify({
      path: stored.path,
      source_sha256: sourceSha256,
      stored_sha256: stored.sha256,
      listed_sha256: listed.sha256,
      downloaded_sha256: downloadedSha256,
    }),
  );
  const agree = [stored.sha256, listed.sha256, downloadedSha256].every((s) => s === sourceSha256);
  if (!agree) console.error("roundtrip: sha256 differs between source, server and download");
  return agree ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConnectError) {
      console.error(`roundtrip: status ${grpcStatusName(err.code)}: ${err.rawMessage}`);
    } else {
      console.error("roundtrip:", err instanceof Error ? err.message : err);
    }
    process.exit(1);
  },
);
