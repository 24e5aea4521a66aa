"""scalpdesk's application layer: the command line, the console, the headless runner."""
