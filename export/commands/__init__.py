"""aarm-export sub-commands, one module per group; each module's `register(app)` adds its commands."""
