"""scalpdesk's trading engine: everything that trades. Never imports textual."""
