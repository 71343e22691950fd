"""The `artifactd` command line."""
