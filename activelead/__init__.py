"""The `activelead` command: one entry point that wires rules/, proxy/ and control_api/."""
