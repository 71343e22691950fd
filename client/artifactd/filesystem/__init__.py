"""artifactd as an fsspec filesystem: `artifactd://HOST:PORT/<path>` for pandas, pyarrow, Dask
and every other fsspec user (the `fsspec.specs` entry point `artifactd`; see `spec`).

Named `filesystem`, not `fsspec`, so that no import of this package can be mistaken for the
`fsspec` library it builds on.
"""

from artifactd.filesystem.file import ArtifactdFile
from artifactd.filesystem.spec import ArtifactdFileSystem

__all__ = ["ArtifactdFile", "ArtifactdFileSystem"]
