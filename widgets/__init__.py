"""The console's panels: each renders engine events and forwards key presses."""
