"""Detection: rules and models read features and say which keys look like tunnels."""
