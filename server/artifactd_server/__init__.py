"""The artifactd gRPC server: configuration, servicer, storage adapters."""
