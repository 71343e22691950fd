// Package artifactd connects the generated Go client (package artifactdv1) to an artifactd
// server as the Python client does: the server, TLS with a CA bundle, a client certificate for
// mutual TLS and a bearer token, from explicit Options with the Python client's environment
// variables as fallbacks. Hand-written; the generated code is in ../artifactdv1.
//
//	conn, err := artifactd.Dial(ctx, artifactd.Options{CAFile: "ca.pem", TokenFile: "token"})
//	if err != nil { ... }
//	defer conn.Close()
//	client := artifactdv1.NewArtifactServiceClient(conn)
package artifactd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"regexp"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// The variables the Python client and CLI read, with the same names and meaning.
const (
	ServerVariable     = "ARTIFACTD_SERVER"
	TLSVariable        = "ARTIFACTD_TLS"
	TLSCAVariable      = "ARTIFACTD_TLS_CA"
	ClientCertVariable = "ARTIFACTD_CLIENT_CERT"
	ClientKeyVariable  = "ARTIFACTD_CLIENT_KEY"
	TokenVariable      = "ARTIFACTD_TOKEN"
	TokenFileVariable  = "ARTIFACTD_TOKEN_FILE"
)

// DefaultServer is the server when neither Options.Server nor ARTIFACTD_SERVER names one.
const DefaultServer = "127.0.0.1:50051"

// MaxMessageSize is the largest message sent or received: the server's limit, as in Python.
const MaxMessageSize = 16 << 20

// Options say where and how to connect. A field left at its zero value falls back to its
// environment variable (read with Getenv).
type Options struct {
	// Server is host:port, or any gRPC target (ARTIFACTD_SERVER; default 127.0.0.1:50051).
	Server string
	// TLS checks the server's certificate against the system's CAs unless CAFile or CAPEM name
	// others (ARTIFACTD_TLS=1/true/yes/on). Implied by a CA, a client certificate or key.
	TLS bool
	// CAFile is the PEM CA bundle the server's certificate is checked against (ARTIFACTD_TLS_CA).
	CAFile string
	// CAPEM is the CA bundle itself, instead of CAFile.
	CAPEM []byte
	// ClientCert and ClientKey are PEM files of a client certificate and its key, for servers
	// that demand one: mutual TLS (ARTIFACTD_CLIENT_CERT, ARTIFACTD_CLIENT_KEY).
	ClientCert string
	ClientKey  string
	// Token is a bearer token (or JWT) sent as "authorization: Bearer <token>" with every call
	// (ARTIFACTD_TOKEN).
	Token string
	// TokenFile is a file whose first line is the token, a mounted secret (ARTIFACTD_TOKEN_FILE).
	// Token wins over it, and either of them over the variables.
	TokenFile string
	// Getenv reads the fallbacks: os.Getenv when nil; NoEnvironment reads none.
	Getenv func(string) string
}

// NoEnvironment is a Getenv that finds no variable: only the Options count.
func NoEnvironment(string) string { return "" }

// Settings are the Options resolved against the environment, the files read.
type Settings struct {
	Server string
	// TLS is nil for plaintext.
	TLS   *tls.Config
	Token string
}

func invalid(format string, args ...interface{}) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func pick(option string, getenv func(string) string, variable string) string {
	if option != "" {
		return option
	}
	return strings.TrimSpace(getenv(variable))
}

// Resolve applies the environment's fallbacks and reads the PEM and token files. A client
// certificate without its key (or the reverse), an unreadable file or an empty token file is an
// INVALID_ARGUMENT error, as in the Python client.
func Resolve(o Options) (*Settings, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	s := &Settings{Server: pick(o.Server, getenv, ServerVariable)}
	if s.Server == "" {
		s.Server = DefaultServer
	}
	caFile := pick(o.CAFile, getenv, TLSCAVariable)
	certFile := pick(o.ClientCert, getenv, ClientCertVariable)
	keyFile := pick(o.ClientKey, getenv, ClientKeyVariable)
	switch strings.ToLower(strings.TrimSpace(getenv(TLSVariable))) {
	case "1", "true", "yes", "on":
		o.TLS = true
	}
	if o.TLS || o.CAPEM != nil || caFile != "" || certFile != "" || keyFile != "" {
		config, err := tlsConfig(o.CAPEM, caFile, certFile, keyFile)
		if err != nil {
			return nil, err
		}
		s.TLS = config
	}
	token, err := resolveToken(o, getenv)
	if err != nil {
		return nil, err
	}
	s.Token = token
	return s, nil
}

func tlsConfig(caPEM []byte, caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, invalid("a client certificate needs its key: set both %s and %s "+
			"(Options.ClientCert and Options.ClientKey)", ClientCertVariable, ClientKeyVariable)
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM == nil && caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, invalid("cannot read the CA bundle %q: %v", caFile, err)
		}
		caPEM = data
	}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			if caFile == "" {
				return nil, invalid("Options.CAPEM holds no PEM certificate")
			}
			return nil, invalid("the CA bundle %q holds no PEM certificate", caFile)
		}
		config.RootCAs = pool
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, invalid("cannot load the client certificate %q and key %q: %v",
				certFile, keyFile, err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// resolveToken: Token, TokenFile, then ARTIFACTD_TOKEN, then ARTIFACTD_TOKEN_FILE.
func resolveToken(o Options, getenv func(string) string) (string, error) {
	if token := strings.TrimSpace(o.Token); token != "" {
		return token, nil
	}
	if o.TokenFile != "" {
		return readToken(o.TokenFile, "Options.TokenFile")
	}
	if token := strings.TrimSpace(getenv(TokenVariable)); token != "" {
		return token, nil
	}
	if path := strings.TrimSpace(getenv(TokenFileVariable)); path != "" {
		return readToken(path, TokenFileVariable)
	}
	return "", nil
}

// readToken returns the first line of the file, trimmed; an empty one is an error.
func readToken(path, origin string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", invalid("cannot read %s=%q: %v", origin, path, err)
	}
	line := string(data)
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	token := strings.TrimSpace(line)
	if token == "" {
		return "", invalid("%s=%q is empty", origin, path)
	}
	return token, nil
}

// BearerToken adds "authorization: Bearer <token>" to every call.
type BearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false, as in the Python client, which sends its token over
// plaintext too: behind a mesh sidecar that terminates mutual TLS, the hop to the server is
// plaintext on purpose. Without such a sidecar, use TLS whenever you send a token.
func (BearerToken) RequireTransportSecurity() bool { return false }

// DialOptions are the grpc.DialOptions for the settings: TLS or plaintext, the token, and the
// server's message size limit.
func (s *Settings) DialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))}
	if s.TLS != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(s.TLS)))
	} else {
		opts = append(opts, grpc.WithInsecure())
	}
	if s.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(BearerToken(s.Token)))
	}
	return append(opts, grpc.WithChainUnaryInterceptor(s.explainUnary),
		grpc.WithChainStreamInterceptor(s.explainStream))
}

// connectionDropped matches how grpc-go words a connection the server closed (which of them
// depends on timing).
var connectionDropped = regexp.MustCompile(
	`connection closed|broken pipe|closed network connection|connection reset by peer|EOF$`)

// explain adds what to check to an UNAVAILABLE for a connection the server closed before its
// HTTP/2 preface: what a gRPC server requiring a client certificate does (without a TLS alert)
// when none or a stranger's comes, and what a TLS server does to plaintext.
func (s *Settings) explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || !connectionDropped.MatchString(st.Message()) {
		return err
	}
	hint := "if it serves TLS, connect with TLS: set Options.CAFile or Options.TLS " +
		"(" + TLSCAVariable + ", " + TLSVariable + "=1)"
	if s.TLS != nil {
		hint = "if it requires a client certificate (mutual TLS), it was not sent or not " +
			"accepted: set Options.ClientCert and Options.ClientKey (" + ClientCertVariable + ", " +
			ClientKeyVariable + ") to a certificate from a CA the server trusts"
	}
	return status.Errorf(codes.Unavailable, "%s closed the connection (%s): %s", s.Server,
		st.Message(), hint)
}

func (s *Settings) explainUnary(ctx context.Context, method string, req, reply interface{},
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return s.explain(invoker(ctx, method, req, reply, cc, opts...))
}

func (s *Settings) explainStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
	method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	stream, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, s.explain(err)
	}
	return explainedStream{stream, s}, nil
}

// explainedStream is a stream whose failures carry explain's hint.
type explainedStream struct {
	grpc.ClientStream
	settings *Settings
}

func (e explainedStream) RecvMsg(m interface{}) error {
	return e.settings.explain(e.ClientStream.RecvMsg(m))
}

// Dial resolves the options and opens a connection; extra DialOptions come after the
// artifactd ones. It does not wait for the server: a server that cannot be reached, or a TLS
// handshake that fails (an unknown CA, a refused client certificate), fails the first calls
// with UNAVAILABLE, as in gRPC's other clients.
func Dial(ctx context.Context, o Options, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	s, err := Resolve(o)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.DialContext(ctx, s.Server, append(s.DialOptions(), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", s.Server, err)
	}
	return conn, nil
}

// StatusName is the gRPC name of the error's status code ("UNAUTHENTICATED"), also when the
// status error is wrapped (fmt.Errorf with %w); "" for an error that carries no status.
func StatusName(err error) string {
	for e := err; e != nil; {
		if se, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			if name, known := codeNames[se.GRPCStatus().Code()]; known {
				return name
			}
			return "UNKNOWN"
		}
		unwrapper, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = unwrapper.Unwrap()
	}
	return ""
}

var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}
