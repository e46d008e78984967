"""aarm-export sub-commands, one module per group; each module's `register(app)` adds its commands (export.cli
lists them). Options they share live in export.options; no command module imports another."""
