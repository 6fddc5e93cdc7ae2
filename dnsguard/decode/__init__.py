"""Link, IP and transport decoding: from a captured frame to the DNS-port payload it carries."""
