// Command roundtrip uploads a file to an artifactd server, lists its directory and downloads it
// again, with the Go client generated from protos/artifactd/v1/ (package artifactdv1), and
// prints the sha256 of the source, of what the server stored, listed and sent back.
//
//	roundtrip [OPTIONS] FILE OUT [ARTIFACT_PATH]
//
// FILE is the file to upload, OUT where the download goes, ARTIFACT_PATH the path on the server
// (default roundtrip/<base name of FILE>). The options are the Python CLI's, each with the same
// environment variable as its fallback (package artifactd, ../../artifactd, reads them):
//
//	-server HOST:PORT   ARTIFACTD_SERVER (default 127.0.0.1:50051)
//	-tls                TLS with the system's CAs (ARTIFACTD_TLS=1)
//	-tls-ca PEM         CA bundle for the server's certificate (ARTIFACTD_TLS_CA)
//	-client-cert PEM    client certificate for mutual TLS (ARTIFACTD_CLIENT_CERT)
//	-client-key PEM     its key (ARTIFACTD_CLIENT_KEY)
//	-token-file FILE    first line: the bearer token (ARTIFACTD_TOKEN_FILE; or ARTIFACTD_TOKEN)
//
// The last line printed is a JSON object with the four digests; the exit status is 1 unless they
// all agree. A failed call ends with "roundtrip: status <gRPC code>: <error>" and status 1.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"artifactd/client/go/artifactd"
	artifactdv1 "artifactd/client/go/artifactdv1"
)

// Largest chunk the example sends, whatever the server prefers (the server accepts 16 MiB
// messages; smaller chunks keep memory flat).
const maxChunk = 1 << 20

func main() {
	var o artifactd.Options
	flags := flag.NewFlagSet("roundtrip", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: roundtrip [OPTIONS] FILE OUT [ARTIFACT_PATH]")
		flags.PrintDefaults()
	}
	flags.StringVar(&o.Server, "server", "",
		"HOST:PORT ("+artifactd.ServerVariable+"; default "+artifactd.DefaultServer+")")
	flags.BoolVar(&o.TLS, "tls", false, "TLS with the system's CAs ("+artifactd.TLSVariable+"=1)")
	flags.StringVar(&o.CAFile, "tls-ca", "",
		"CA bundle (PEM) for the server's certificate ("+artifactd.TLSCAVariable+")")
	flags.StringVar(&o.ClientCert, "client-cert", "",
		"client certificate (PEM) for mutual TLS ("+artifactd.ClientCertVariable+")")
	flags.StringVar(&o.ClientKey, "client-key", "",
		"key (PEM) of -client-cert ("+artifactd.ClientKeyVariable+")")
	flags.StringVar(&o.TokenFile, "token-file", "", "file whose first line is the bearer token ("+
		artifactd.TokenFileVariable+"; or "+artifactd.TokenVariable+")")
	if err := flags.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	args := flags.Args()
	if len(args) < 2 || len(args) > 3 {
		flags.Usage()
		os.Exit(2)
	}
	source, out := args[0], args[1]
	artifact := "roundtrip/" + filepath.Base(source)
	if len(args) == 3 {
		artifact = args[2]
	}
	if err := run(o, source, out, artifact); err != nil {
		if name := artifactd.StatusName(err); name != "" {
			fmt.Fprintf(os.Stderr, "roundtrip: status %s: %v\n", name, err)
		} else {
			fmt.Fprintln(os.Stderr, "roundtrip:", err)
		}
		os.Exit(1)
	}
}

func run(o artifactd.Options, source, out, artifact string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// TLS, a client certificate and a token as the options and the environment say.
	conn, err := artifactd.Dial(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := artifactdv1.NewArtifactServiceClient(conn)

	caps, err := client.GetCapabilities(ctx, &artifactdv1.GetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("GetCapabilities: %w", err)
	}
	chunk := caps.GetChunkSize()
	if chunk <= 0 || chunk > maxChunk {
		chunk = maxChunk
	}

	sourceSum, stored, err := upload(ctx, client, source, artifact, int(chunk))
	if err != nil {
		return err
	}
	fmt.Printf("uploaded   %s: %d bytes, sha256 %s (source %s)\n",
		stored.GetPath(), stored.GetFileSize(), stored.GetSha256(), sourceSum)

	listed, err := find(ctx, client, artifact)
	if err != nil {
		return err
	}
	fmt.Printf("listed     %s: %d bytes, sha256 %s\n", listed.GetPath(), listed.GetFileSize(), listed.GetSha256())

	downloadedSum, err := download(ctx, client, artifact, out)
	if err != nil {
		return err
	}
	fmt.Printf("downloaded %s to %s: sha256 %s\n", artifact, out, downloadedSum)

	report, _ := json.Marshal(map[string]string{
		"path":              stored.GetPath(),
		"source_sha256":     sourceSum,
		"stored_sha256":     stored.GetSha256(),
		"listed_sha256":     listed.GetSha256(),
		"downloaded_sha256": downloadedSum,
	})
	fmt.Println(string(report))
	if stored.GetSha256() != sourceSum || listed.GetSha256() != sourceSum || downloadedSum != sourceSum {
		return errors.New("sha256 differs between source, server and download")
	}
	return nil
}

// upload streams one file with LogArtifact: a header (path, size, policy), the data in chunks,
// then finish with the sha256 computed while reading. Returns that sha256 and the stored file.
func upload(ctx context.Context, client artifactdv1.ArtifactServiceClient, source, artifact string, chunk int) (string, *artifactdv1.FileInfo, error) {
	f, err := os.Open(source)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	size := st.Size()
	stream, err := client.LogArtifact(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("LogArtifact: %w", err)
	}
	header := &artifactdv1.UploadHeader{
		Path:      artifact,
		Size:      &size,
		Overwrite: artifactdv1.OverwritePolicy_OVERWRITE_POLICY_OVERWRITE,
	}
	if err := stream.Send(&artifactdv1.LogArtifactRequest{Header: header}); err != nil {
		return "", nil, sendError(stream, err)
	}
	digest := sha256.New()
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			digest.Write(buf[:n])
			// Send does not keep the slice after it returns, so buf can be reused.
			if err := stream.Send(&artifactdv1.LogArtifactRequest{Data: buf[:n]}); err != nil {
				return "", nil, sendError(stream, err)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return "", nil, err
		}
	}
	sum := hex.EncodeToString(digest.Sum(nil))
	finish := &artifactdv1.UploadFinish{Sha256: sum}
	if err := stream.Send(&artifactdv1.LogArtifactRequest{Finish: finish}); err != nil {
		return "", nil, sendError(stream, err)
	}
	reply, err := stream.CloseAndRecv()
	if err != nil {
		return "", nil, fmt.Errorf("LogArtifact %s: %w", artifact, err)
	}
	return sum, reply.GetFile(), nil
}

// sendError returns the server's status when Send failed because the server ended the call.
func sendError(stream artifactdv1.ArtifactService_LogArtifactClient, err error) error {
	if err == io.EOF {
		if _, recvErr := stream.CloseAndRecv(); recvErr != nil {
			return fmt.Errorf("LogArtifact: %w", recvErr)
		}
	}
	return fmt.Errorf("LogArtifact: %w", err)
}

// find lists the artifact's directory, page by page, and returns its entry.
func find(ctx context.Context, client artifactdv1.ArtifactServiceClient, artifact string) (*artifactdv1.FileInfo, error) {
	dir := path.Dir(artifact)
	if dir == "." {
		dir = ""
	}
	token := ""
	for {
		page, err := client.ListArtifacts(ctx, &artifactdv1.ListArtifactsRequest{Path: dir, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("ListArtifacts %q: %w", dir, err)
		}
		for _, entry := range page.GetFiles() {
			if entry.GetPath() == artifact {
				return entry, nil
			}
		}
		token = page.GetNextPageToken()
		if token == "" {
			return nil, fmt.Errorf("%s is not listed in %q", artifact, dir)
		}
	}
}

// download streams the file with DownloadArtifact (FileInfo first, then data) into out and
// returns the sha256 of the bytes received, after checking their count against the FileInfo.
func download(ctx context.Context, client artifactdv1.ArtifactServiceClient, artifact, out string) (string, error) {
	stream, err := client.DownloadArtifact(ctx, &artifactdv1.DownloadArtifactRequest{Path: artifact})
	if err != nil {
		return "", fmt.Errorf("DownloadArtifact: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	defer f.Close()
	digest := sha256.New()
	var info *artifactdv1.FileInfo
	var received int64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("DownloadArtifact %s: %w", artifact, err)
		}
		if msg.GetInfo() != nil {
			info = msg.GetInfo()
		}
		if _, err := f.Write(msg.GetData()); err != nil {
			return "", err
		}
		digest.Write(msg.GetData())
		received += int64(len(msg.GetData()))
	}
	if info == nil {
		return "", errors.New("DownloadArtifact: no FileInfo in the first message")
	}
	if received != info.GetFileSize() {
		return "", fmt.Errorf("DownloadArtifact: %d bytes received, FileInfo says %d", received, info.GetFileSize())
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(digest.Sum(nil)), nil
}
